/* mpc, malicious security at N = 2 and N = 5: the bit-flip pipeline of
 * test_mpc_malicious.c (every operation of the engine, a random bit of a random
 * party's message to a random peer in a random round, 300 runs each), compiled here as
 * a suite of its own so that each suite stays within about ten seconds. */
#define MPC_MALICIOUS_N25 1
#include "test_mpc_malicious.c"

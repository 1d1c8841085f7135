/* The one main() of every Check suite: each test file defines suite() and links this.
 * It runs the suite with Check's normal output (the summary line CI reads) and exits
 * non-zero when any test failed. */
#include <check.h>
#include <stdlib.h>

#include "testutil.h"

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

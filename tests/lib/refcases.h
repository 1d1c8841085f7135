/* refcases: the expected outputs of the reference model, read at test time from
 * $MIMIR_SHARED/models/README.md (the shared file is the reference; no test retypes
 * its numbers). Each "### "prompt"" section gives the prompt ids, the generated ids and
 * the text; the README also states the smallest winning logit margin. */
#ifndef MIMIR_REFCASES_H
#define MIMIR_REFCASES_H

#define TU_REF_MAX 8

struct tu_ref_case {
	char prompt[256];
	int pids[64], np;    /* prompt ids, BOS first */
	int gids[128], ng;   /* generated ids */
	char ids[1024];      /* generated ids as text, single-spaced */
	char text[2048];     /* the prompt and continuation as printed */
};

/* Fills up to cap cases, returns their count (a Check assertion fails when the README
 * cannot be read or parsed). margin, when not NULL, gets the stated smallest margin. */
int tu_ref_load(struct tu_ref_case *c, int cap, double *margin);

#endif

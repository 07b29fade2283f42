/* SPDX-License-Identifier: MIT */
/*
 * vmshm_check.h: the one line per check that the guest's check programs print
 * and the host's tests read: "CHECK <name> ok" or "CHECK <name> FAIL <why>".
 * `failures` counts the failed ones (a program's exit status).  For one
 * program's own use: its definitions are static.
 */
#ifndef VMSHM_CHECK_H
#define VMSHM_CHECK_H

#include <stdio.h>

static int failures;

static void check(const char *name, int ok, const char *why)
{
	if (ok) {
		printf("CHECK %s ok\n", name);
	} else {
		printf("CHECK %s FAIL %s\n", name, why);
		failures++;
	}
	fflush(stdout);
}

#endif

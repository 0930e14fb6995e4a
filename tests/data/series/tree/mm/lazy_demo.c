// SPDX-License-Identifier: GPL-2.0
/*
 * A small stand-in for arch code that writes kernel page-table entries:
 * every valid write is followed by the barriers that make it visible to
 * the table walker.
 */
#include <linux/lazy_demo.h>

static unsigned long nr_barriers;

static inline void emit_barriers(void)
{
	dsb(ishst);
	isb();
	nr_barriers++;
}

void demo_set_pte(pte_t *ptep, pte_t pte)
{
	WRITE_ONCE(*ptep, pte);

	if (pte_valid(pte))
		emit_barriers();
}

void demo_set_pmd(pmd_t *pmdp, pmd_t pmd)
{
	WRITE_ONCE(*pmdp, pmd);

	if (pmd_valid(pmd))
		emit_barriers();
}

unsigned long demo_barrier_count(void)
{
	return nr_barriers;
}

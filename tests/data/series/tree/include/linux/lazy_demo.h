/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_LAZY_DEMO_H
#define _LINUX_LAZY_DEMO_H

#include <asm/pgtable.h>

void demo_set_pte(pte_t *ptep, pte_t pte);
void demo_set_pmd(pmd_t *pmdp, pmd_t pmd);
unsigned long demo_barrier_count(void);

#endif /* _LINUX_LAZY_DEMO_H */

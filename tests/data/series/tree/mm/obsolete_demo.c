// SPDX-License-Identifier: GPL-2.0
/* Old helper, removed by the series. */
int obsolete_demo(void)
{
	return 0;
}

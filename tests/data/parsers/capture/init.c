/*
 * One-off /init used to capture the REAL guest output kept in tests/data/parsers/real_*
 * (see capture.sh). Not part of mmlab's image builder: it only prints what the parsers
 * read, between markers, from the warm-up 6.12 kernel.
 * Built with the kernel tree's nolibc: no C library needed for the arm64 guest.
 */
#include "nolibc.h"

#ifndef __NR_finit_module
#define __NR_finit_module 273
#endif

static void say(const char *s) { write(1, s, strlen(s)); }

static void cat(const char *path)
{
	char buf[4096];
	long n;
	int fd = open(path, O_RDONLY, 0);

	if (fd < 0) {
		say("capture: cannot open ");
		say(path);
		say("\n");
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		write(1, buf, n);
	close(fd);
}

static void load(const char *params)
{
	int fd = open("/test_vmalloc.ko", O_RDONLY, 0);
	long ret;

	say("=== test_vmalloc begin ===\n");
	ret = my_syscall3(__NR_finit_module, fd, params, 0);
	/* -EAGAIN is test_vmalloc's way of unloading itself after the run */
	say(ret == -11 ? "=== test_vmalloc end (EAGAIN) ===\n" : "=== test_vmalloc end (other) ===\n");
	close(fd);
}

int main(void)
{
	int fd;

	mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
	fd = open("/dev/console", O_RDWR, 0);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
	}
	mount("proc", "/proc", "proc", 0, 0);
	mount("debugfs", "/sys", "debugfs", 0, 0);

	say("=== ptdump begin ===\n");
	cat("/sys/kernel_page_tables");
	say("=== ptdump end ===\n");
	say("=== check_wx_pages begin ===\n");
	cat("/sys/check_wx_pages");
	say("=== check_wx_pages end ===\n");

	load("nr_threads=2 test_loop_count=2000 run_test_mask=2047");
	load("run_test_mask=1 nr_pages=256 use_huge=1 test_loop_count=2000");

	say("=== ptdump begin ===\n");
	cat("/sys/kernel_page_tables");
	say("=== ptdump end ===\n");

	/* a real panic with a call trace: sysrq crash */
	fd = open("/proc/sysrq-trigger", O_WRONLY, 0);
	write(fd, "c", 1);
	say("capture: still alive after sysrq-c\n");
	reboot(LINUX_REBOOT_CMD_POWER_OFF);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * mmlab-load: load one kernel module with exactly one finit_module() call.
 *
 * Why: test_vmalloc's init runs the tests and then returns -EAGAIN on purpose, so the
 * module never stays loaded. busybox insmod/modprobe treat the failed finit_module() as
 * "try init_module() instead" and run the whole test suite a second time. This loader
 * makes one call and reports what the kernel said, so one load is one test run.
 *
 * Usage: mmlab-load MODULE.ko [param=value ...]
 * Prints one line "mmlab-load: <module>: finit_module = <rc> (<name>)" and exits with
 * 0 when the module loaded, else the errno of the failing call (e.g. 11 = EAGAIN, which
 * is test_vmalloc's normal "tests done" answer; 2 = ENOENT when the file is missing).
 *
 * Built freestanding against the kernel tree's own nolibc (tools/include/nolibc), static,
 * with the cross compiler: no libc for arm64 is needed on the host.
 */

static char params[4096];

static const char *errname(int e)
{
	switch (e) {
	case 0: return "OK";
	case 1: return "EPERM";
	case 2: return "ENOENT";
	case 8: return "ENOEXEC";
	case 11: return "EAGAIN";
	case 12: return "ENOMEM";
	case 13: return "EACCES";
	case 14: return "EFAULT";
	case 16: return "EBUSY";
	case 17: return "EEXIST";
	case 22: return "EINVAL";
	case 38: return "ENOSYS";
	case 61: return "ENODATA";
	case 129: return "EKEYREJECTED";
	default: return "errno";
	}
}

int main(int argc, char **argv)
{
	size_t used = 0;
	long rc;
	int fd, i;

	if (argc < 2) {
		printf("usage: mmlab-load MODULE.ko [param=value ...]\n");
		return 22;
	}
	for (i = 2; i < argc; i++) {
		size_t n = strlen(argv[i]);

		if (used + n + 2 > sizeof(params)) {
			printf("mmlab-load: parameters too long\n");
			return 7; /* E2BIG */
		}
		if (used)
			params[used++] = ' ';
		memcpy(params + used, argv[i], n);
		used += n;
	}
	params[used] = 0;

	fd = my_syscall4(__NR_openat, AT_FDCWD, argv[1], O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		printf("mmlab-load: %s: open = %d (%s)\n", argv[1], fd, errname(-fd));
		return -fd;
	}
	rc = my_syscall3(__NR_finit_module, fd, params, 0);
	printf("mmlab-load: %s: finit_module = %ld (%s)\n", argv[1], rc, errname((int)-rc));
	return rc < 0 ? (int)-rc : 0;
}

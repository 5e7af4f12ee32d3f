/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the vfio-pci PUD mapping tests: open a device through the
 * legacy group/container interface, find a BAR of at least 1 GiB and map it
 * so that the kernel can install a 1 GiB (PUD) leaf entry for it.
 *
 * Only raw VFIO ioctls and sysfs are used, so the tests run against any
 * device bound to vfio-pci whose BAR is large enough.
 */
#ifndef VFIO_PCI_PUD_H
#define VFIO_PCI_PUD_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>

#define SZ_1M		(1UL << 20)
#define SZ_2M		(2UL << 20)
#define SZ_1G		(1UL << 30)

#define PUD_BAR_SLOTS	6

/* What a test needs to know about the device and the BAR it maps. */
struct pud_dev {
	int container;
	int group;
	int device;
	bool noiommu;
	unsigned int bar;
	/* BAR size and offset of its region in the device fd. */
	uint64_t size;
	uint64_t offset;
	/* Physical address of the BAR, from sysfs. */
	uint64_t phys;
	/* Why pud_dev_open() failed, for SKIP() or ASSERT messages. */
	char why[256];
};

/*
 * Takes the device address (and optionally the BAR index) from the end of the
 * command line, "[BDF [BAR]]", removing them so that the harness does not see
 * them; falls back to $VFIO_SELFTESTS_BDF and $VFIO_SELFTESTS_BAR.  A BAR
 * index of -1 means "the first mappable BAR of at least 1 GiB".
 */
static inline const char *pud_parse_args(int *argc, char **argv, int *bar)
{
	unsigned int dom, bus, dev, fn;
	const char *bdf = getenv("VFIO_SELFTESTS_BDF");
	const char *env_bar = getenv("VFIO_SELFTESTS_BAR");
	char *end;
	long n;

	*bar = env_bar ? (int)strtol(env_bar, NULL, 0) : -1;
	if (*argc > 2) {
		n = strtol(argv[*argc - 1], &end, 0);
		if (*end == '\0' && n >= 0 && n < PUD_BAR_SLOTS &&
		    sscanf(argv[*argc - 2], "%x:%x:%x.%x",
			   &dom, &bus, &dev, &fn) == 4) {
			*bar = (int)n;
			*argc -= 1;
		}
	}
	if (*argc > 1 && sscanf(argv[*argc - 1], "%x:%x:%x.%x",
				&dom, &bus, &dev, &fn) == 4) {
		bdf = argv[*argc - 1];
		*argc -= 1;
	}
	return bdf;
}

/* Whether /proc/kallsyms has @name or a compiler clone of it (name.isra.0). */
static inline bool pud_kernel_has_symbol(const char *name)
{
	size_t len = strlen(name);
	char line[512];
	bool found = false;
	FILE *f;

	f = fopen("/proc/kallsyms", "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *sym = strrchr(line, ' ');

		if (!sym)
			continue;
		sym++;
		found = !strncmp(sym, name, len) &&
			(sym[len] == '\n' || sym[len] == '.' ||
			 sym[len] == '\t' || sym[len] == '\0');
	}
	fclose(f);
	return found;
}

/*
 * Why the kernel cannot map the BAR with PUD entries, or NULL if it may:
 * huge pfnmap (vfio_pci_mmap_huge_fault, 6.12+) and THP not set to "never".
 */
static inline const char *pud_unsupported_reason(void)
{
	char buf[128] = "";
	FILE *f;

	if (!pud_kernel_has_symbol("vfio_pci_mmap_huge_fault"))
		return "kernel has no huge pfnmap (no vfio_pci_mmap_huge_fault in /proc/kallsyms)";
	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f)
		return "no /sys/kernel/mm/transparent_hugepage/enabled (THP not built)";
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	if (strstr(buf, "[never]"))
		return "transparent_hugepage/enabled is [never]: no huge faults";
	return NULL;
}

static inline int pud_fail(struct pud_dev *d, const char *what)
{
	snprintf(d->why, sizeof(d->why), "%s: %s", what, strerror(errno));
	return -1;
}

static inline int pud_read_group(struct pud_dev *d, const char *bdf)
{
	char path[128], link[PATH_MAX];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return pud_fail(d, path);
	link[n] = '\0';
	base = strrchr(link, '/');
	return atoi(base ? base + 1 : link);
}

static inline int pud_read_phys(struct pud_dev *d, const char *bdf)
{
	unsigned long long start, end, flags;
	char path[128];
	unsigned int i;
	int ret = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource", bdf);
	f = fopen(path, "r");
	if (!f)
		return pud_fail(d, path);
	for (i = 0; i <= d->bar; i++) {
		if (fscanf(f, "%llx %llx %llx", &start, &end, &flags) != 3)
			break;
		if (i == d->bar) {
			d->phys = start;
			ret = 0;
		}
	}
	fclose(f);
	if (ret)
		snprintf(d->why, sizeof(d->why), "%s: no line for BAR %u",
			 path, d->bar);
	return ret;
}

static inline int pud_open_container(struct pud_dev *d, const char *bdf,
				     int group)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	unsigned long type;
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%d", group);
	d->noiommu = !stat(path, &st);
	if (!d->noiommu)
		snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	type = d->noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU;

	d->container = open("/dev/vfio/vfio", O_RDWR);
	if (d->container < 0)
		return pud_fail(d, "open /dev/vfio/vfio");
	if (ioctl(d->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		return pud_fail(d, "VFIO_GET_API_VERSION");
	if (ioctl(d->container, VFIO_CHECK_EXTENSION, type) <= 0) {
		snprintf(d->why, sizeof(d->why), "container lacks %s",
			 d->noiommu ? "VFIO_NOIOMMU_IOMMU" : "VFIO_TYPE1v2_IOMMU");
		return -1;
	}
	/* EBUSY here: someone else (maybe a task stuck in the kernel) holds it. */
	d->group = open(path, O_RDWR);
	if (d->group < 0)
		return pud_fail(d, path);
	if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &status))
		return pud_fail(d, "VFIO_GROUP_GET_STATUS");
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		snprintf(d->why, sizeof(d->why),
			 "group %d is not viable (a device is bound to a host driver)",
			 group);
		return -1;
	}
	if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container))
		return pud_fail(d, "VFIO_GROUP_SET_CONTAINER");
	if (ioctl(d->container, VFIO_SET_IOMMU, type))
		return pud_fail(d, "VFIO_SET_IOMMU");
	d->device = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (d->device < 0)
		return pud_fail(d, "VFIO_GROUP_GET_DEVICE_FD");
	return 0;
}

/*
 * Picks BAR @want, or the first mappable one of at least 1 GiB if @want < 0.
 * Returns 0, 1 if there is no such BAR, or -1 if the ioctl failed.
 */
static inline int pud_pick_bar(struct pud_dev *d, int want)
{
	struct vfio_region_info info;
	unsigned int i;

	for (i = 0; i < PUD_BAR_SLOTS; i++) {
		if (want >= 0 && i != (unsigned int)want)
			continue;
		memset(&info, 0, sizeof(info));
		info.argsz = sizeof(info);
		info.index = i;
		if (ioctl(d->device, VFIO_DEVICE_GET_REGION_INFO, &info))
			return pud_fail(d, "VFIO_DEVICE_GET_REGION_INFO");
		if (!(info.flags & VFIO_REGION_INFO_FLAG_MMAP) ||
		    info.size < SZ_1G)
			continue;
		d->bar = i;
		d->size = info.size;
		d->offset = info.offset;
		return 0;
	}
	if (want >= 0)
		snprintf(d->why, sizeof(d->why),
			 "BAR %d is not mmap-able or smaller than 1 GiB", want);
	else
		snprintf(d->why, sizeof(d->why),
			 "no mmap-able BAR of at least 1 GiB");
	return 1;
}

/* Turns on memory decode: vfio-pci refuses BAR faults while it is off. */
static inline int pud_enable_memory(struct pud_dev *d)
{
	struct vfio_region_info cfg = {
		.argsz = sizeof(cfg),
		.index = VFIO_PCI_CONFIG_REGION_INDEX,
	};
	uint16_t cmd;

	if (ioctl(d->device, VFIO_DEVICE_GET_REGION_INFO, &cfg))
		return pud_fail(d, "VFIO_DEVICE_GET_REGION_INFO (config)");
	if (pread(d->device, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND) !=
	    sizeof(cmd))
		return pud_fail(d, "reading PCI_COMMAND");
	if (cmd & PCI_COMMAND_MEMORY)
		return 0;
	cmd |= PCI_COMMAND_MEMORY;
	if (pwrite(d->device, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND) !=
	    sizeof(cmd))
		return pud_fail(d, "writing PCI_COMMAND");
	return 0;
}

/*
 * Opens @bdf and picks its BAR (@bar, or the first one of at least 1 GiB if
 * @bar < 0).  Returns 0, 1 if the device cannot run the test (d->why says
 * why: a SKIP), or -1 on an error (d->why says what failed).
 */
static inline int pud_dev_open(struct pud_dev *d, const char *bdf, int bar)
{
	int group, ret;

	memset(d, 0, sizeof(*d));
	d->container = d->group = d->device = -1;
	group = pud_read_group(d, bdf);
	if (group < 0)
		return -1;
	if (pud_open_container(d, bdf, group))
		return -1;
	ret = pud_pick_bar(d, bar);
	if (ret)
		return ret;
	if (pud_read_phys(d, bdf))
		return -1;
	return pud_enable_memory(d);
}

static inline void pud_dev_close(struct pud_dev *d)
{
	if (d->device >= 0)
		close(d->device);
	if (d->group >= 0)
		close(d->group);
	if (d->container >= 0)
		close(d->container);
}

/*
 * Reserves (PROT_NONE) @len bytes at an address congruent to @residue modulo
 * 1 GiB and returns it, or MAP_FAILED.  The reservation is 1 GiB larger to
 * find such an address; what is left around the range is given back.
 */
static inline void *pud_reserve(size_t len, uint64_t residue)
{
	size_t span = len + SZ_1G;
	uintptr_t base, va;
	void *p;

	p = mmap(NULL, span, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return MAP_FAILED;
	base = (uintptr_t)p;
	va = (base & ~(SZ_1G - 1)) + (residue & (SZ_1G - 1));
	if (va < base)
		va += SZ_1G;
	if (va > base)
		munmap((void *)base, va - base);
	if (base + span > va + len)
		munmap((void *)(va + len), base + span - (va + len));
	return (void *)va;
}

/*
 * Maps @len bytes of the BAR from @bar_off at a virtual address congruent to
 * the physical address modulo 1 GiB, the condition for PUD entries.  Returns
 * MAP_FAILED on failure.
 */
static inline void *pud_map(const struct pud_dev *d, uint64_t bar_off,
			    size_t len)
{
	void *va = pud_reserve(len, d->phys + bar_off);
	void *p;

	if (va == MAP_FAILED)
		return MAP_FAILED;
	p = mmap(va, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 d->device, d->offset + bar_off);
	if (p == MAP_FAILED)
		munmap(va, len);
	return p;
}

/* Minor faults of this thread so far. */
static inline long pud_minflt(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru))
		return -1;
	return ru.ru_minflt;
}

/*
 * BAR accesses: forced (the compiler may neither drop nor merge them), and
 * 8 bytes wide, which memory BARs take.
 */
static inline uint64_t pud_read(const uint64_t *p, size_t off)
{
	return __atomic_load_n(&p[off / sizeof(*p)], __ATOMIC_RELAXED);
}

static inline void pud_write(uint64_t *p, size_t off, uint64_t val)
{
	__atomic_store_n(&p[off / sizeof(*p)], val, __ATOMIC_RELAXED);
}

/* Reads one word of each 2 MiB block of [p, p + len); returns the faults. */
static inline long pud_touch(const uint64_t *p, size_t len)
{
	long before = pud_minflt();
	size_t off;

	for (off = 0; off < len; off += SZ_2M)
		(void)pud_read(p, off);
	return pud_minflt() - before;
}

/* The word written at byte offset @off: differs per offset and per run. */
static inline uint64_t pud_pattern(uint64_t seed, size_t off)
{
	return (seed ^ off) * 0x9e3779b97f4a7c15ULL;
}

/*
 * Writes the pattern into the first word of every 2 MiB block, saving what
 * was there into @saved (len / SZ_2M words).  Returns false if the memory
 * does not read back what was written (a BAR that is not memory-like): the
 * caller then cannot check data and restores @saved.
 */
static inline bool pud_fill(uint64_t *p, size_t len, uint64_t seed,
			    uint64_t *saved)
{
	size_t off;

	for (off = 0; off < len; off += SZ_2M) {
		saved[off / SZ_2M] = pud_read(p, off);
		pud_write(p, off, pud_pattern(seed, off));
	}
	for (off = 0; off < len; off += SZ_2M)
		if (pud_read(p, off) != pud_pattern(seed, off))
			return false;
	return true;
}

/* Offset of the first word of [0, len) that lost its pattern, or -1. */
static inline long pud_check(const uint64_t *p, size_t len, uint64_t seed)
{
	size_t off;

	for (off = 0; off < len; off += SZ_2M)
		if (pud_read(p, off) != pud_pattern(seed, off))
			return (long)off;
	return -1;
}

/* Puts back what pud_fill() saved. */
static inline void pud_restore(uint64_t *p, size_t len, const uint64_t *saved)
{
	size_t off;

	for (off = 0; off < len; off += SZ_2M)
		pud_write(p, off, saved[off / SZ_2M]);
}

#endif /* VFIO_PCI_PUD_H */

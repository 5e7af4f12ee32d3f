// SPDX-License-Identifier: GPL-2.0-only
/*
 * Splitting a vfio-pci BAR mapping inside a 1 GiB (PUD) leaf entry.
 *
 * With huge pfnmap (6.12+), vfio-pci maps a BAR with a PUD leaf entry when the
 * virtual address is congruent to the physical address modulo 1 GiB.  A VMA
 * split inside such a block must clear the PUD entry, after which the rest of
 * the VMA refaults with smaller entries and its data stay intact.
 *
 * A split at an address that is not 2 MiB aligned goes through
 * vma_adjust_trans_huge() -> split_huge_pmd_address(), whose mm_find_pmd()
 * takes the leaf PUD for a table of PMDs: the kernel oopses and the task stays
 * stuck in munmap().  munmap_pmd_tail (a 2 MiB aligned split) is the control;
 * munmap_unaligned_tail is the reproducer and runs last.
 *
 * Usage: vfio_pci_pud_split_test [harness options] [BDF [BAR]]
 * or VFIO_SELFTESTS_BDF=BDF [VFIO_SELFTESTS_BAR=BAR].
 */
#define _GNU_SOURCE
#include <time.h>

#include "../kselftest_harness.h"

#include "vfio_pci_pud.h"

/*
 * The reproducer's task cannot be killed after the oops; a short harness
 * timeout reports it and lets the program end (the test itself takes
 * milliseconds).
 */
#define SPLIT_TIMEOUT	10

static const char *device_bdf;
static int bar_index = -1;

/* The mapped GiB, and what was written into it. */
struct pud_split {
	struct pud_dev dev;
	uint64_t *map;
	/* Bytes of the GiB still mapped. */
	size_t kept;
	uint64_t seed;
	/* Whether the BAR keeps data, so that they can be checked. */
	bool data;
	uint64_t saved[SZ_1G / SZ_2M];
};

FIXTURE(vfio_pci_pud_split) {
	struct pud_split s;
};

FIXTURE_SETUP(vfio_pci_pud_split)
{
	struct pud_split *s = &self->s;
	const char *why = pud_unsupported_reason();
	long faults;
	int ret;

	s->map = MAP_FAILED;
	s->dev.device = s->dev.group = s->dev.container = -1;
	if (!device_bdf)
		SKIP(return, "no device: pass a BDF or set VFIO_SELFTESTS_BDF");
	if (why)
		SKIP(return, "%s", why);
	ret = pud_dev_open(&s->dev, device_bdf, bar_index);
	if (ret > 0)
		SKIP(return, "%s: %s", device_bdf, s->dev.why);
	ASSERT_EQ(0, ret) TH_LOG("%s: %s", device_bdf, s->dev.why);

	s->map = pud_map(&s->dev, 0, SZ_1G);
	ASSERT_NE(MAP_FAILED, s->map)
		TH_LOG("mmap of BAR %u: %s", s->dev.bar, strerror(errno));
	s->kept = SZ_1G;
	faults = pud_touch(s->map, SZ_1G);
	if (faults != 1)
		SKIP(return, "no PUD entry: the first GiB of BAR %u took %ld faults, not 1",
		     s->dev.bar, faults);

	s->seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	s->data = pud_fill(s->map, SZ_1G, s->seed, s->saved);
	if (!s->data)
		TH_LOG("BAR %u does not keep what is written: data not checked",
		       s->dev.bar);
}

FIXTURE_TEARDOWN(vfio_pci_pud_split)
{
	struct pud_split *s = &self->s;

	if (s->map != MAP_FAILED) {
		pud_restore(s->map, s->kept, s->saved);
		munmap(s->map, s->kept);
	}
	pud_dev_close(&s->dev);
}

/* Unmaps the last @cut bytes of the PUD-mapped GiB and checks the rest. */
static void split_tail(struct __test_metadata *_metadata, struct pud_split *s,
		       size_t cut)
{
	char *tail = (char *)s->map + SZ_1G - cut;
	long bad, faults;

	ASSERT_EQ(0, munmap(tail, cut)) TH_LOG("munmap: %s", strerror(errno));
	s->kept = SZ_1G - cut;

	/* The PUD entry must be gone; what is left refaults in smaller pieces. */
	faults = pud_touch(s->map, s->kept);
	TH_LOG("after the split, touching the rest took %ld faults", faults);
	EXPECT_LT(0, faults);
	if (!s->data)
		return;
	bad = pud_check(s->map, s->kept, s->seed);
	ASSERT_EQ(-1, bad) TH_LOG("data lost at offset %#lx of BAR %u",
				  bad, s->dev.bar);
}

/* Control: a split at a 2 MiB boundary works on every kernel. */
TEST_F(vfio_pci_pud_split, munmap_pmd_tail)
{
	split_tail(_metadata, &self->s, SZ_2M);
}

/* The reproducer: a split 1 MiB below the end of the block. */
TEST_F_TIMEOUT(vfio_pci_pud_split, munmap_unaligned_tail, SPLIT_TIMEOUT)
{
	split_tail(_metadata, &self->s, SZ_1M);
}

int main(int argc, char *argv[])
{
	device_bdf = pud_parse_args(&argc, argv, &bar_index);
	return test_harness_run(argc, argv);
}

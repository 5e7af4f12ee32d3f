// SPDX-License-Identifier: GPL-2.0-only
/*
 * Moving a vfio-pci BAR mapping that is mapped with a 1 GiB (PUD) leaf entry.
 *
 * With huge pfnmap (6.12+), vfio-pci maps a BAR with a PUD leaf entry when the
 * virtual address is congruent to the physical address modulo 1 GiB.  mremap()
 * by a multiple of 1 GiB keeps that congruence, so the entry can move with the
 * VMA: touching the moved block must cost no fault.
 *
 * move_pud() is only reached for PUD-aligned moves when the architecture
 * supports moving PUD entries; otherwise move_page_tables() takes the leaf
 * entry for a table in get_old_pud(), pud_none_or_clear_bad() reports
 * "bad pud" and clears it.  The data stay intact (they live in the device),
 * but the block refaults: one fault where there should be none.
 *
 * Usage: vfio_pci_pud_mremap_test [harness options] [BDF [BAR]]
 * or VFIO_SELFTESTS_BDF=BDF [VFIO_SELFTESTS_BAR=BAR].
 */
#define _GNU_SOURCE
#include <time.h>

#include "../kselftest_harness.h"

#include "vfio_pci_pud.h"

static const char *device_bdf;
static int bar_index = -1;

FIXTURE(vfio_pci_pud_mremap) {
	struct pud_dev dev;
	uint64_t *map;
	uint64_t seed;
	bool data;
	uint64_t saved[SZ_1G / SZ_2M];
};

FIXTURE_SETUP(vfio_pci_pud_mremap)
{
	const char *why = pud_unsupported_reason();
	long faults;
	int ret;

	self->map = MAP_FAILED;
	self->dev.device = self->dev.group = self->dev.container = -1;
	if (!device_bdf)
		SKIP(return, "no device: pass a BDF or set VFIO_SELFTESTS_BDF");
	if (why)
		SKIP(return, "%s", why);
	ret = pud_dev_open(&self->dev, device_bdf, bar_index);
	if (ret > 0)
		SKIP(return, "%s: %s", device_bdf, self->dev.why);
	ASSERT_EQ(0, ret) TH_LOG("%s: %s", device_bdf, self->dev.why);

	self->map = pud_map(&self->dev, 0, SZ_1G);
	ASSERT_NE(MAP_FAILED, self->map)
		TH_LOG("mmap of BAR %u: %s", self->dev.bar, strerror(errno));
	faults = pud_touch(self->map, SZ_1G);
	if (faults != 1)
		SKIP(return, "no PUD entry: the first GiB of BAR %u took %ld faults, not 1",
		     self->dev.bar, faults);

	self->seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	self->data = pud_fill(self->map, SZ_1G, self->seed, self->saved);
	if (!self->data)
		TH_LOG("BAR %u does not keep what is written: data not checked",
		       self->dev.bar);
}

FIXTURE_TEARDOWN(vfio_pci_pud_mremap)
{
	if (self->map != MAP_FAILED) {
		pud_restore(self->map, SZ_1G, self->saved);
		munmap(self->map, SZ_1G);
	}
	pud_dev_close(&self->dev);
}

/* A move by a multiple of 1 GiB keeps the PUD entry: no refault. */
TEST_F(vfio_pci_pud_mremap, move_pud_congruent)
{
	uintptr_t src = (uintptr_t)self->map;
	void *dst, *moved;
	long bad, faults;

	dst = pud_reserve(SZ_1G, src);
	ASSERT_NE(MAP_FAILED, dst) TH_LOG("reserving: %s", strerror(errno));
	ASSERT_EQ(0, ((uintptr_t)dst - src) % SZ_1G);

	moved = mremap(self->map, SZ_1G, SZ_1G, MREMAP_MAYMOVE | MREMAP_FIXED,
		       dst);
	if (moved == MAP_FAILED)
		munmap(dst, SZ_1G);
	ASSERT_EQ(dst, moved) TH_LOG("mremap: %s", strerror(errno));
	self->map = moved;

	faults = pud_touch(self->map, SZ_1G);
	if (self->data) {
		bad = pud_check(self->map, SZ_1G, self->seed);
		ASSERT_EQ(-1, bad) TH_LOG("data lost at offset %#lx of BAR %u",
					  bad, self->dev.bar);
	}
	ASSERT_EQ(0, faults)
		TH_LOG("the moved GiB refaulted (%ld faults): mremap dropped the PUD entry (dmesg: \"bad pud\"?)",
		       faults);
}

int main(int argc, char *argv[])
{
	device_bdf = pud_parse_args(&argc, argv, &bar_index);
	return test_harness_run(argc, argv);
}

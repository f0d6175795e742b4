/* The layout shared by latency.bpf.c (the kernel side) and bpf_source.cpp
 * (user space): the per-thread slot in the mmap'ed `slots` array, the blame
 * map's key and value, and the ring buffer's event. Plain C, fixed-width
 * types, no pointers: both compilers must lay it out alike. See
 * docs/latency.md, "The BPF source". */
#ifndef PL_LATENCY_BPF_H
#define PL_LATENCY_BPF_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Histogram buckets, exactly latency::Histogram's (histogram.h): values below
 * 64 ns exact, then 32 buckets per power of two up to 2^42 ns. */
#define PL_HIST_EXACT 64
#define PL_HIST_SUB_BITS 5
#define PL_HIST_TOP_EXP 42
#define PL_HIST_BUCKETS (PL_HIST_EXACT + (PL_HIST_TOP_EXP - 6) * (1 << PL_HIST_SUB_BITS))

#define PL_MAX_SLOTS 256 /* threads tracked (the slots array; user space may lower it) */
#define PL_MAX_CPUS 256  /* per-CPU state and allowed masks */
#define PL_CPU_WORDS (PL_MAX_CPUS / 64)
#define PL_WAITERS 4      /* target threads waiting on one CPU whose blame is kept */
#define PL_MAX_BLAME 8192 /* (thread, blocker) pairs */

/* What a wait was. */
enum pl_wait_kind {
  PL_WAIT_NONE = 0,
  PL_WAIT_WAKEUP = 1,  /* woken (sched_wakeup / sched_wakeup_new) until it ran */
  PL_WAIT_PREEMPT = 2, /* switched out while runnable until it ran again */
};

/* Who ran on the CPU instead (blame) or interrupted it (noise). */
enum pl_blocker_kind {
  PL_BLK_TASK = 1,        /* id = tid; comm, tgid and cgroup id in the value */
  PL_BLK_IRQ = 2,         /* id = irq number; the action's name in comm */
  PL_BLK_SOFTIRQ = 3,     /* id = vector (NET_RX = 3, TIMER = 1, ...) */
  PL_BLK_IDLE = 4,        /* the CPU was idle: the wait is idle exit */
  PL_BLK_LOCAL_TIMER = 5, /* the local APIC timer interrupt */
};

#define PL_BLAME_NOISE 1 /* pl_blame_key.flags: while the thread ran, not while it waited */

struct pl_hist {
  __u32 counts[PL_HIST_BUCKETS];
};

/* One tracked thread. User space writes tid, allowed and in_use for the
 * threads it knows (from QMP and /proc) before attaching; the kernel
 * allocates slots for threads that appear later (next_slot). Everything
 * else is written by the kernel only, except window_max_ns, which user
 * space resets after reading. */
struct pl_slot {
  __u32 tid;
  __u32 in_use;
  __u64 allowed[PL_CPU_WORDS]; /* affinity when first seen */

  __u64 wakeups, wakeup_ns, wakeup_max_ns;
  __u64 preempts, preempt_ns, preempt_max_ns;
  __u64 wakings, waking_ns, waking_max_ns; /* sched_waking -> sched_wakeup */
  __u64 switch_ins, run_ns;
  __u64 migrations;
  __u64 outside_ns, outside_switch_ins; /* ran on a CPU outside `allowed` */
  __u64 noise_ns, noise_count;          /* IRQ/softirq time while it was current */
  __u64 worst_ns, worst_ts; /* the longest wait and when it ended (CLOCK_MONOTONIC ns) */
  __u32 worst_kind, worst_cpu;
  __u64 window_max_ns; /* longest wait since user space last reset it */
  __u64 blame_lost_ns; /* wait time not attributed (more than PL_WAITERS waiting, map full) */

  /* State (kernel only). */
  __u64 wait_start, waking_ts, run_start, cur_waking_ns;
  __s32 wait_kind, wait_cpu, run_cpu, pad;

  struct pl_hist wakeup, preempt, waking;
};

struct pl_waiter {
  __u32 slot; /* slot + 1; 0 = free */
  __u16 prev_kind, top_kind;
  __u32 prev_id, top_id;
  __u64 last;   /* time blamed up to */
  __u64 top_ns; /* the longest single stretch and its blocker */
};

/* Per CPU (the program's .bss, `cpus`): what runs there now, and who waits there. Written on that
 * CPU, except waiters, which a remote wakeup or migration adds under the rq lock. */
struct pl_cpu {
  __s32 curr_slot; /* the tracked thread running here, or -1 */
  __u16 hard_kind; /* PL_BLK_IRQ or PL_BLK_LOCAL_TIMER while in one */
  __u16 in_softirq;
  __u32 hard_id, soft_vec;
  __u32 nwait, pad;
  __u64 hard_start, soft_start, soft_nested_ns;
  struct pl_waiter w[PL_WAITERS];
};

struct pl_blame_key {
  __u32 slot;
  __u16 kind;  /* enum pl_blocker_kind */
  __u16 flags; /* PL_BLAME_NOISE */
  __u32 id;
  __u32 pad;
};

struct pl_blame_val {
  __u64 ns;
  __u64 count; /* times it ran in the way (or interrupted) */
  __u64 cgroup_id;
  __u32 tgid;
  char comm[16];
  __u32 pad;
};

/* A wait longer than the threshold, streamed through the ring buffer. */
struct pl_event {
  __u64 ts; /* when it ended, CLOCK_MONOTONIC ns */
  __u64 wait_ns;
  __u64 waking_ns; /* sched_waking -> sched_wakeup, 0 if not seen */
  __u64 top_ns;    /* the blocker that took most of it */
  __u32 tid;
  __u32 slot;
  __u16 cpu;
  __u8 kind; /* enum pl_wait_kind */
  __u8 top_kind;
  __u32 top_id;
};

#endif

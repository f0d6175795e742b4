// SPDX-License-Identifier: GPL-2.0
/* The kernel side of `passlaunch latency --source bpf`: for the threads of
 * one process (target_tgid), every wait from the scheduler's own events.
 *
 *  - A wait starts at sched_wakeup / sched_wakeup_new (wakeup latency) or at
 *    sched_switch away from a runnable thread (preemption delay), and ends at
 *    the sched_switch that puts it on a CPU. sched_waking -> sched_wakeup is
 *    kept apart (remote wakeup / IPI delay).
 *  - Blame: while a tracked thread waits on a CPU, every change of what runs
 *    there (a task switch, a hard IRQ, the local timer, a softirq) closes a
 *    stretch of time, added to the (thread, blocker) pair in `blame`.
 *  - Noise: IRQ and softirq time on a CPU whose current task is tracked.
 *
 * Minimal by design (STYLE.md 13): filter, stamp, count. Histograms are
 * bucket counters laid out as latency::Histogram's; percentiles, names and
 * printing are user space's (bpf_source.cpp). Other tasks cost one load and
 * compare (tgid); a tracked thread's slot is one hash lookup (tid -> slot). */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "latency/bpf/latency_bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile __u64 threshold_ns = 100000;
const volatile __u32 max_slots = PL_MAX_SLOTS;

__u32 next_slot = 0;   /* slots handed out; user space starts it past its own */
__u64 slots_full = 0;  /* threads not tracked: no slot left */
__u64 blame_full = 0;  /* blame stretches lost: map full */
__u64 events_lost = 0; /* waits over the threshold not streamed: ring full */

struct pl_cpu cpus[PL_MAX_CPUS] = {};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, PL_MAX_SLOTS);
  __type(key, __u32);
  __type(value, struct pl_slot);
} slots SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, PL_MAX_SLOTS * 4);
  __type(key, __u32);   /* tid */
  __type(value, __u32); /* slot; PL_MAX_SLOTS: seen, no slot left */
} tids SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, PL_MAX_BLAME);
  __type(key, struct pl_blame_key);
  __type(value, struct pl_blame_val);
} blame SEC(".maps");

#define PL_RB_SIZE (256 * 1024)
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, PL_RB_SIZE);
} events SEC(".maps");

static __always_inline struct pl_cpu *cpu_state(__u32 cpu) { return &cpus[cpu & (PL_MAX_CPUS - 1)]; }

static __always_inline __u32 log2_u64(__u64 v) {
  __u32 r = 0, shift;
  shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
  shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
  shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
  shift = (v > 0xF) << 2; v >>= shift; r |= shift;
  shift = (v > 0x3) << 1; v >>= shift; r |= shift;
  r |= (v >> 1);
  return r;
}

/* latency::Histogram::bucket_of, for the verifier. */
static __always_inline void hist_add(struct pl_hist *h, __u64 ns) {
  __u32 b;
  if (ns < PL_HIST_EXACT) {
    b = ns;
  } else {
    __u32 e = log2_u64(ns);
    if (e >= PL_HIST_TOP_EXP)
      b = PL_HIST_BUCKETS - 1;
    else
      b = PL_HIST_EXACT + (e - 6) * (1 << PL_HIST_SUB_BITS) +
          ((ns >> (e - PL_HIST_SUB_BITS)) & ((1 << PL_HIST_SUB_BITS) - 1));
  }
  asm volatile("" : "+r"(b)); /* keep the bound check below */
  if (b >= PL_HIST_BUCKETS) b = PL_HIST_BUCKETS - 1;
  __sync_fetch_and_add(&h->counts[b], 1);
}

static __always_inline int outside(const struct pl_slot *s, __s32 cpu) {
  if (cpu < 0) return 0;
  return !((s->allowed[(cpu >> 6) & (PL_CPU_WORDS - 1)] >> (cpu & 63)) & 1);
}

/* The slot of a thread of target_tgid; a new one is given the next free
 * slot. NULL for other tasks (the one compare most events pay). */
static __always_inline struct pl_slot *slot_of(struct task_struct *p, __u32 *idx_out) {
  if (p->tgid != target_tgid) return NULL;
  __u32 tid = p->pid;
  __u32 *idx = bpf_map_lookup_elem(&tids, &tid);
  __u32 n;
  if (idx) {
    n = *idx;
  } else {
    n = __sync_fetch_and_add(&next_slot, 1);
    if (n >= max_slots || n >= PL_MAX_SLOTS) {
      __u32 none = PL_MAX_SLOTS;
      __sync_fetch_and_add(&slots_full, 1);
      bpf_map_update_elem(&tids, &tid, &none, BPF_NOEXIST);
      return NULL;
    }
    struct pl_slot *s = bpf_map_lookup_elem(&slots, &n);
    if (!s) return NULL;
    s->tid = tid;
    s->run_cpu = -1;
    s->wait_cpu = -1;
    __u32 size = bpf_core_field_size(p->cpus_mask.bits);
    if (size > sizeof(s->allowed)) size = sizeof(s->allowed);
    bpf_probe_read_kernel(s->allowed, size, p->cpus_ptr);
    s->in_use = 1;
    if (bpf_map_update_elem(&tids, &tid, &n, BPF_NOEXIST)) return NULL;
  }
  if (n >= PL_MAX_SLOTS) return NULL;
  *idx_out = n;
  return bpf_map_lookup_elem(&slots, &n);
}

static __always_inline void blame_add(__u32 slot, __u16 kind, __u16 flags, __u32 id, __u64 ns,
                                      int counted, struct task_struct *t, const char *name) {
  struct pl_blame_key key = {.slot = slot, .kind = kind, .flags = flags, .id = id};
  struct pl_blame_val *v = bpf_map_lookup_elem(&blame, &key);
  if (!v) {
    struct pl_blame_val init = {};
    if (t) {
      init.tgid = t->tgid;
      bpf_probe_read_kernel_str(init.comm, sizeof init.comm, t->comm);
      init.cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
    } else if (name) {
      bpf_probe_read_kernel_str(init.comm, sizeof init.comm, name);
    }
    bpf_map_update_elem(&blame, &key, &init, BPF_NOEXIST);
    v = bpf_map_lookup_elem(&blame, &key);
    if (!v) {
      __sync_fetch_and_add(&blame_full, 1);
      return;
    }
  }
  __sync_fetch_and_add(&v->ns, ns);
  if (counted) __sync_fetch_and_add(&v->count, 1);
}

/* Closes the stretch each waiter on this CPU spent behind the blocker that
 * ran until now. */
static __always_inline void flush(struct pl_cpu *c, __u64 now, __u16 kind, __u32 id,
                                  struct task_struct *t, const char *name) {
#pragma unroll
  for (int i = 0; i < PL_WAITERS; i++) {
    struct pl_waiter *w = &c->w[i];
    if (!w->slot) continue;
    __u64 span = now - w->last;
    w->last = now;
    int counted = w->prev_kind != kind || w->prev_id != id;
    w->prev_kind = kind;
    w->prev_id = id;
    if (span > w->top_ns) {
      w->top_ns = span;
      w->top_kind = kind;
      w->top_id = id;
    }
    blame_add(w->slot - 1, kind, 0, id, span, counted, t, name);
  }
}

/* What runs on this CPU below any IRQ being entered: a softirq, a task or idle. */
static __always_inline void flush_current(struct pl_cpu *c, __u64 now) {
  if (!c->nwait) return;
  if (c->hard_kind) {
    flush(c, now, c->hard_kind, c->hard_id, NULL, NULL);
  } else if (c->in_softirq) {
    flush(c, now, PL_BLK_SOFTIRQ, c->soft_vec, NULL, NULL);
  } else {
    struct task_struct *t = bpf_get_current_task_btf();
    if (t->pid == 0)
      flush(c, now, PL_BLK_IDLE, 0, NULL, NULL);
    else
      flush(c, now, PL_BLK_TASK, t->pid, t, NULL);
  }
}

static __always_inline void add_waiter(struct pl_cpu *c, __u32 slot, __u64 now) {
#pragma unroll
  for (int i = 0; i < PL_WAITERS; i++) {
    struct pl_waiter *w = &c->w[i];
    if (w->slot) continue;
    w->slot = slot + 1;
    w->last = now;
    w->top_ns = 0;
    w->top_kind = 0;
    w->top_id = 0;
    w->prev_kind = 0;
    w->prev_id = 0;
    __sync_fetch_and_add(&c->nwait, 1);
    return;
  }
}

/* Removes slot's waiter from CPU c; copies it to *out. 0 if it was not there. */
static __always_inline int remove_waiter(struct pl_cpu *c, __u32 slot, struct pl_waiter *out) {
#pragma unroll
  for (int i = 0; i < PL_WAITERS; i++) {
    struct pl_waiter *w = &c->w[i];
    if (w->slot != slot + 1) continue;
    *out = *w;
    w->slot = 0;
    __sync_fetch_and_sub(&c->nwait, 1);
    return 1;
  }
  return 0;
}

static __always_inline void start_wait(struct pl_slot *s, __u32 idx, int kind, __s32 cpu, __u64 now) {
  s->wait_kind = kind;
  s->wait_start = now;
  s->wait_cpu = cpu;
  add_waiter(cpu_state(cpu), idx, now);
}

static __always_inline void end_wait(struct pl_slot *s, __u32 idx, __s32 cpu, __u64 now) {
  __u64 wait = now - s->wait_start;
  struct pl_waiter w = {};
  int kind = s->wait_kind;
  int found = remove_waiter(cpu_state(s->wait_cpu), idx, &w);
  if (!found) s->blame_lost_ns += wait;
  if (kind == PL_WAIT_WAKEUP) {
    s->wakeups++;
    s->wakeup_ns += wait;
    if (wait > s->wakeup_max_ns) s->wakeup_max_ns = wait;
    hist_add(&s->wakeup, wait);
  } else {
    s->preempts++;
    s->preempt_ns += wait;
    if (wait > s->preempt_max_ns) s->preempt_max_ns = wait;
    hist_add(&s->preempt, wait);
  }
  if (wait > s->worst_ns) {
    s->worst_ns = wait;
    s->worst_ts = now;
    s->worst_kind = kind;
    s->worst_cpu = cpu;
  }
  if (wait > s->window_max_ns) s->window_max_ns = wait;
  s->wait_kind = PL_WAIT_NONE;
  if (wait >= threshold_ns) {
    struct pl_event *e = bpf_ringbuf_reserve(&events, sizeof *e, 0);
    if (!e) {
      __sync_fetch_and_add(&events_lost, 1);
    } else {
      e->ts = now;
      e->wait_ns = wait;
      e->waking_ns = kind == PL_WAIT_WAKEUP ? s->cur_waking_ns : 0;
      e->top_ns = w.top_ns;
      e->tid = s->tid;
      e->slot = idx;
      e->cpu = cpu;
      e->kind = kind;
      e->top_kind = w.top_kind;
      e->top_id = w.top_id;
      /* No wakeup per event: the consumer reads on its timer, or when a
       * quarter of the ring is used, so it never preempts what it measures. */
      __u64 used = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
      bpf_ringbuf_submit(e, used >= PL_RB_SIZE / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
    }
  }
  s->cur_waking_ns = 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
             unsigned int prev_state) {
  __u64 now = bpf_ktime_get_ns();
  __s32 cpu = bpf_get_smp_processor_id();
  struct pl_cpu *c = cpu_state(cpu);
  __u32 idx;
  struct pl_slot *s;

  if (c->nwait) {
    if (prev->pid == 0)
      flush(c, now, PL_BLK_IDLE, 0, NULL, NULL);
    else
      flush(c, now, PL_BLK_TASK, prev->pid, prev, NULL);
  }
  c->curr_slot = -1;

  s = slot_of(prev, &idx);
  if (s) {
    if (s->run_cpu >= 0) {
      __u64 ran = now - s->run_start;
      s->run_ns += ran;
      if (outside(s, s->run_cpu)) s->outside_ns += ran;
    }
    s->run_cpu = -1;
    if (s->wait_kind) { /* cannot wait while it runs: a stale start */
      struct pl_waiter w;
      remove_waiter(cpu_state(s->wait_cpu), idx, &w);
      s->wait_kind = PL_WAIT_NONE;
    }
    s->waking_ts = 0;
    if (preempt || prev_state == 0 /* TASK_RUNNING */) start_wait(s, idx, PL_WAIT_PREEMPT, cpu, now);
  }

  s = slot_of(next, &idx);
  if (s) {
    if (s->wait_kind) end_wait(s, idx, cpu, now);
    s->switch_ins++;
    s->run_start = now;
    s->run_cpu = cpu;
    if (outside(s, cpu)) s->outside_switch_ins++;
    c->curr_slot = idx;
  }
  return 0;
}

static __always_inline int on_wakeup(struct task_struct *p) {
  __u32 idx;
  struct pl_slot *s = slot_of(p, &idx);
  if (!s || s->run_cpu >= 0 || s->wait_kind) return 0; /* running or already waiting */
  __u64 now = bpf_ktime_get_ns();
  __s32 cpu = BPF_CORE_READ(p, thread_info.cpu);
  if (s->waking_ts) {
    __u64 d = now - s->waking_ts;
    s->wakings++;
    s->waking_ns += d;
    if (d > s->waking_max_ns) s->waking_max_ns = d;
    hist_add(&s->waking, d);
    s->cur_waking_ns = d; /* reported with the event */
    s->waking_ts = 0;
  }
  start_wait(s, idx, PL_WAIT_WAKEUP, cpu, now);
  return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup_tp, struct task_struct *p) { return on_wakeup(p); }

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(on_wakeup_new, struct task_struct *p) { return on_wakeup(p); }

SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *p) {
  __u32 idx;
  struct pl_slot *s = slot_of(p, &idx);
  if (!s || s->run_cpu >= 0 || s->wait_kind) return 0;
  s->waking_ts = bpf_ktime_get_ns();
  return 0;
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(on_migrate, struct task_struct *p, int dest_cpu) {
  __u32 idx;
  struct pl_slot *s = slot_of(p, &idx);
  if (!s) return 0;
  s->migrations++;
  if (s->wait_kind && s->wait_cpu != dest_cpu) { /* queued elsewhere: it waits there now */
    __u64 now = bpf_ktime_get_ns();
    struct pl_waiter w = {};
    if (remove_waiter(cpu_state(s->wait_cpu), idx, &w)) s->blame_lost_ns += now - w.last;
    s->wait_cpu = dest_cpu;
    add_waiter(cpu_state(dest_cpu), idx, now);
  }
  return 0;
}

static __always_inline void hard_enter(__u16 kind, __u32 id) {
  __u64 now = bpf_ktime_get_ns();
  struct pl_cpu *c = cpu_state(bpf_get_smp_processor_id());
  flush_current(c, now);
  c->hard_kind = kind;
  c->hard_id = id;
  c->hard_start = now;
}

static __always_inline void hard_exit(const char *name) {
  __u64 now = bpf_ktime_get_ns();
  struct pl_cpu *c = cpu_state(bpf_get_smp_processor_id());
  if (!c->hard_kind) return; /* attached inside it */
  __u64 d = now - c->hard_start;
  if (c->nwait) flush(c, now, c->hard_kind, c->hard_id, NULL, name);
  if (c->in_softirq) {
    c->soft_nested_ns += d;
  } else if (c->curr_slot >= 0) {
    __u32 idx = c->curr_slot;
    struct pl_slot *s = bpf_map_lookup_elem(&slots, &idx);
    if (s) {
      s->noise_ns += d;
      s->noise_count++;
      blame_add(idx, c->hard_kind, PL_BLAME_NOISE, c->hard_id, d, 1, NULL, name);
    }
  }
  c->hard_kind = 0;
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(on_irq_entry, int irq, struct irqaction *action) {
  hard_enter(PL_BLK_IRQ, irq);
  return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(on_irq_exit, int irq, struct irqaction *action, int ret) {
  hard_exit(BPF_CORE_READ(action, name));
  return 0;
}

SEC("tp_btf/local_timer_entry")
int BPF_PROG(on_timer_entry, int vector) {
  hard_enter(PL_BLK_LOCAL_TIMER, vector);
  return 0;
}

SEC("tp_btf/local_timer_exit")
int BPF_PROG(on_timer_exit, int vector) {
  hard_exit(NULL);
  return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(on_softirq_entry, unsigned int vec) {
  __u64 now = bpf_ktime_get_ns();
  struct pl_cpu *c = cpu_state(bpf_get_smp_processor_id());
  flush_current(c, now);
  c->in_softirq = 1;
  c->soft_vec = vec;
  c->soft_start = now;
  c->soft_nested_ns = 0;
  return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(on_softirq_exit, unsigned int vec) {
  __u64 now = bpf_ktime_get_ns();
  struct pl_cpu *c = cpu_state(bpf_get_smp_processor_id());
  if (!c->in_softirq) return 0;
  __u64 d = now - c->soft_start - c->soft_nested_ns;
  if (c->nwait) flush(c, now, PL_BLK_SOFTIRQ, vec, NULL, NULL);
  if (c->curr_slot >= 0) {
    __u32 idx = c->curr_slot;
    struct pl_slot *s = bpf_map_lookup_elem(&slots, &idx);
    if (s) {
      s->noise_ns += d;
      s->noise_count++;
      blame_add(idx, PL_BLK_SOFTIRQ, PL_BLAME_NOISE, vec, d, 1, NULL, NULL);
    }
  }
  c->in_softirq = 0;
  return 0;
}

/*
 * mmlab_barriers: a QEMU TCG plugin that counts the barrier and TLB-maintenance
 * instructions an AArch64 guest really executes.
 *
 * Why: timings under emulation swing by 2x between runs, executed instructions do not.
 * mmlab compares the DSB/ISB a kernel executes per workload loop with what its counting
 * model predicts, so the counts must be exact, per kernel function and per workload.
 *
 * What is counted (classified once, at translation time, from the 32-bit encoding):
 *   dsb.<domain>  DSB with its CRm domain (ish, ishst, sy, nsh, ...); SSBB/PSSBB excluded
 *   dmb.<domain>  DMB with its domain
 *   dsb.<d>nxs    DSB <domain>nXS (FEAT_XS)
 *   isb           ISB
 *   tlbi.<op>     TLBI (SYS with CRn=8), named from op1/CRm/op2 (vaale1is, vmalle1is, ...)
 *   atomic.lse[.a|.l|.al]  LSE atomic memory operations (LDADD/LDCLR/LDEOR/LDSET/LD{S,U}
 *                 {MAX,MIN}/SWP and their ST* aliases), by ordering: .a acquire, .l release,
 *                 .al both (fully ordered); LDAPR is a load, not counted
 *   atomic.cas[.a|.l|.al]  CAS and CASP (LSE compare-and-swap)
 *   atomic.stxr / atomic.stlxr  store-exclusive (STXR/STXP, STLXR/STLXP): one per LL/SC
 *                 attempt (the load-exclusive is not counted, so an atomic op is one count)
 * The names follow orchestrator/aarch64.py (the static census), and mmlab re-derives the
 * kind of each site from its encoding with that module, so static and dynamic keys agree.
 *   insns         optionally (insns=on), all executed instructions, counted per TB
 *
 * Attribution: each counted instruction is a "site" (guest virtual address + encoding).
 * A site belongs to the function whose [start, end) range contains its address, from the
 * ranges file; otherwise to "(kernel)" (address in the upper half) or "(user)" (lower
 * half). The output lists per-site counts, so the caller can aggregate by function and
 * kind, or compare individual barrier sites with a static census.
 *
 * Windows: the guest marks phases by executing a marker instruction,
 *     MOVZ XZR, #(0x4D00 | id), LSL #48        encoding 0xD2E0001F | (0x4D00 | id) << 5
 * (a write to the zero register: architecturally a no-op, never emitted by compilers).
 * Each marker closes the current window and opens a new one labelled id (0..255). The
 * counts before the first marker form window 0 labelled "boot". A marker executed on any
 * vCPU switches the window for all vCPUs.
 *
 * SMP: counters are per site and per vCPU, each slot written only by its own vCPU thread,
 * so MTTCG (-smp N) loses no counts. At a marker every site's cumulative count is read
 * and the difference from the previous marker is written: windows always add up to the
 * total. An instruction another vCPU executes at the very moment of a marker may fall in
 * either neighbouring window.
 *
 * Arguments (-plugin mmlab_barriers.so,key=value,...):
 *   out=PATH      write results to PATH (default: QEMU's log, -d plugin -D file)
 *   ranges=PATH   lines "start end name" (hex, end exclusive; '#' comments)
 *   insns=on|off  also count all executed instructions (default off; costs speed)
 *
 * Output (text, one record a line; closed windows are flushed as they close, so a killed
 * QEMU still leaves every finished window):
 *   mmlab-barriers 1
 *   config vcpus=N insns=0|1 ranges=R
 *   window SEQ LABEL vcpu=V           (LABEL: boot or the marker id)
 *   site VADDR WORD KIND FUNCTION COUNT
 *   insns COUNT                        (when insns=on)
 *   endwindow SEQ
 *   end                                (QEMU exited normally)
 *
 * Built by orchestrator/barrier_plugin.py against qemu-plugin.h from Debian's qemu source
 * package (QEMU_PLUGIN_VERSION 1, QEMU 7.2): plain C, no glib.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARKER_MASK 0xFFFFE01Fu /* MOVZ XZR, #imm16, LSL #48 with imm16 = 0x4Dxx */
#define MARKER_BASE 0xD2E0001Fu
#define MARKER_TAG 0x4D00u

enum site_class { SITE_COUNTED, SITE_MARKER };

struct site {
    uint64_t vaddr;
    uint32_t word;
    int cls;
    int marker_id;
    const char *kind;     /* static string or owned copy */
    const char *func;     /* points into the ranges table or a static bucket name */
    uint64_t *count;      /* [nslots], slot v written only by vCPU v */
    uint64_t last;        /* cumulative total at the previous marker */
};

struct range {
    uint64_t start, end;
    char *name;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int nslots = 1;              /* vCPU slots; one extra slot for out-of-range indexes */
static bool count_insns;
static FILE *out;
static uint64_t *insn_count;        /* [nslots] */
static uint64_t insn_last;

static struct site **sites;         /* all sites, for snapshots; guarded by lock */
static size_t nsites, cap_sites;
static struct site **htab;          /* open addressing on (vaddr, word); guarded by lock */
static size_t htab_cap;

static struct range *ranges;
static size_t nranges;

static uint64_t window_seq;

/* ---- output ---------------------------------------------------------------------- */

static char *outbuf;
static size_t outlen, outcap;

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void emit(const char *fmt, ...)
{
    va_list ap;
    if (out) {
        va_start(ap, fmt);
        vfprintf(out, fmt, ap);
        va_end(ap);
        return;
    }
    /* no out= file: accumulate and hand lines to QEMU's log at flush points */
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if (outlen + (size_t)n + 1 > outcap) {
        size_t ncap = outcap ? outcap * 2 : 4096;
        while (ncap < outlen + (size_t)n + 1) {
            ncap *= 2;
        }
        char *nb = realloc(outbuf, ncap);
        if (!nb) {
            return;
        }
        outbuf = nb;
        outcap = ncap;
    }
    va_start(ap, fmt);
    vsnprintf(outbuf + outlen, outcap - outlen, fmt, ap);
    va_end(ap);
    outlen += (size_t)n;
}

static void flush_out(void)
{
    if (out) {
        fflush(out);
    } else if (outlen) {
        qemu_plugin_outs(outbuf);
        outlen = 0;
        outbuf[0] = '\0';
    }
}

/* ---- classification -------------------------------------------------------------- */

static const char *const dsb_names[16] = {
    NULL, "dsb.oshld", "dsb.oshst", "dsb.osh", NULL, "dsb.nshld", "dsb.nshst", "dsb.nsh",
    "dsb.#8", "dsb.ishld", "dsb.ishst", "dsb.ish", "dsb.#12", "dsb.ld", "dsb.st", "dsb.sy",
};
static const char *const dmb_names[16] = {
    "dmb.#0", "dmb.oshld", "dmb.oshst", "dmb.osh", "dmb.#4", "dmb.nshld", "dmb.nshst",
    "dmb.nsh", "dmb.#8", "dmb.ishld", "dmb.ishst", "dmb.ish", "dmb.#12", "dmb.ld",
    "dmb.st", "dmb.sy",
};

struct tlbi_name {
    unsigned op1, crm, op2;
    const char *name;
};

/* TLBI <op> = SYS #op1, C8, C<crm>, #op2 (Arm ARM, "TLB maintenance instructions") */
static const struct tlbi_name tlbi_names[] = {
    {0, 1, 0, "tlbi.vmalle1os"}, {0, 1, 1, "tlbi.vae1os"},   {0, 1, 2, "tlbi.aside1os"},
    {0, 1, 3, "tlbi.vaae1os"},   {0, 1, 5, "tlbi.vale1os"},  {0, 1, 7, "tlbi.vaale1os"},
    {0, 2, 1, "tlbi.rvae1is"},   {0, 2, 3, "tlbi.rvaae1is"}, {0, 2, 5, "tlbi.rvale1is"},
    {0, 2, 7, "tlbi.rvaale1is"}, {0, 3, 0, "tlbi.vmalle1is"}, {0, 3, 1, "tlbi.vae1is"},
    {0, 3, 2, "tlbi.aside1is"},  {0, 3, 3, "tlbi.vaae1is"},  {0, 3, 5, "tlbi.vale1is"},
    {0, 3, 7, "tlbi.vaale1is"},  {0, 5, 1, "tlbi.rvae1os"},  {0, 5, 3, "tlbi.rvaae1os"},
    {0, 5, 5, "tlbi.rvale1os"},  {0, 5, 7, "tlbi.rvaale1os"}, {0, 6, 1, "tlbi.rvae1"},
    {0, 6, 3, "tlbi.rvaae1"},    {0, 6, 5, "tlbi.rvale1"},   {0, 6, 7, "tlbi.rvaale1"},
    {0, 7, 0, "tlbi.vmalle1"},   {0, 7, 1, "tlbi.vae1"},     {0, 7, 2, "tlbi.aside1"},
    {0, 7, 3, "tlbi.vaae1"},     {0, 7, 5, "tlbi.vale1"},    {0, 7, 7, "tlbi.vaale1"},
    {4, 0, 1, "tlbi.ipas2e1is"}, {4, 0, 5, "tlbi.ipas2le1is"}, {4, 3, 0, "tlbi.alle2is"},
    {4, 3, 1, "tlbi.vae2is"},    {4, 3, 4, "tlbi.alle1is"},  {4, 3, 5, "tlbi.vale2is"},
    {4, 3, 6, "tlbi.vmalls12e1is"}, {4, 4, 1, "tlbi.ipas2e1"}, {4, 4, 5, "tlbi.ipas2le1"},
    {4, 7, 0, "tlbi.alle2"},     {4, 7, 1, "tlbi.vae2"},     {4, 7, 4, "tlbi.alle1"},
    {4, 7, 5, "tlbi.vale2"},     {4, 7, 6, "tlbi.vmalls12e1"}, {6, 3, 0, "tlbi.alle3is"},
    {6, 3, 1, "tlbi.vae3is"},    {6, 3, 5, "tlbi.vale3is"},  {6, 7, 0, "tlbi.alle3"},
    {6, 7, 1, "tlbi.vae3"},      {6, 7, 5, "tlbi.vale3"},
};

/* Returns the kind of a counted instruction, NULL if not counted. *owned is set when the
 * returned string was allocated. */
static const char *classify(uint32_t w, bool *owned)
{
    *owned = false;
    unsigned crm = (w >> 8) & 0xF;
    if ((w & 0xFFFFF0FFu) == 0xD503309Fu) { /* DSB; CRm 0 = SSBB, 4 = PSSBB */
        return dsb_names[crm];
    }
    if ((w & 0xFFFFF0FFu) == 0xD50330BFu) {
        return dmb_names[crm];
    }
    if ((w & 0xFFFFF3FFu) == 0xD503323Fu) { /* DSB <domain>nXS (FEAT_XS) */
        static const char *const nxs[4] = {"dsb.oshnxs", "dsb.nshnxs", "dsb.ishnxs",
                                           "dsb.synxs"};
        return nxs[(w >> 10) & 3];
    }
    if ((w & 0xFFFFF0FFu) == 0xD50330DFu) {
        static const char *const isb_names[16] = {
            "isb.#0", "isb.#1", "isb.#2", "isb.#3", "isb.#4", "isb.#5", "isb.#6", "isb.#7",
            "isb.#8", "isb.#9", "isb.#10", "isb.#11", "isb.#12", "isb.#13", "isb.#14", "isb",
        };
        return isb_names[crm];
    }
    static const char *const orders_lse[4] = {"atomic.lse", "atomic.lse.l", "atomic.lse.a",
                                              "atomic.lse.al"};
    static const char *const orders_cas[4] = {"atomic.cas", "atomic.cas.l", "atomic.cas.a",
                                              "atomic.cas.al"};
    if ((w & 0x3F200C00u) == 0x38200000u) { /* LSE atomic memory op: size 111 0 00 A R 1 */
        unsigned o3 = (w >> 15) & 1, opc = (w >> 12) & 7;
        if (o3 && opc != 0) {
            return NULL; /* LDAPR and reserved encodings: not an atomic RMW */
        }
        return orders_lse[(w >> 22) & 3]; /* bit 23 A, bit 22 R */
    }
    if ((w & 0x3FA07C00u) == 0x08A07C00u || (w & 0xBFA07C00u) == 0x08207C00u) {
        /* CAS (size 001000 1 L 1 Rs o0 11111) / CASP (0 sz 001000 0 L 1 Rs o0 11111) */
        unsigned acq = (w >> 22) & 1, rel = (w >> 15) & 1;
        return orders_cas[acq << 1 | rel];
    }
    if ((w & 0x3FE00000u) == 0x08000000u || (w & 0xBFE00000u) == 0x88200000u) {
        /* STXR/STLXR (size 001000 0 0 0 Rs o0 ...), STXP/STLXP (1 sz 001000 0 0 1 ...) */
        return ((w >> 15) & 1) ? "atomic.stlxr" : "atomic.stxr";
    }
    if ((w & 0xFFF8F000u) == 0xD5088000u) { /* SYS #op1, C8, Cm, #op2, Xt */
        unsigned op1 = (w >> 16) & 7, op2 = (w >> 5) & 7;
        for (size_t i = 0; i < sizeof(tlbi_names) / sizeof(tlbi_names[0]); i++) {
            if (tlbi_names[i].op1 == op1 && tlbi_names[i].crm == crm &&
                tlbi_names[i].op2 == op2) {
                return tlbi_names[i].name;
            }
        }
        char buf[48];
        snprintf(buf, sizeof(buf), "tlbi.op%u_c8_c%u_%u", op1, crm, op2);
        *owned = true;
        return strdup(buf);
    }
    return NULL;
}

static const char *lookup_func(uint64_t vaddr)
{
    /* greatest start <= vaddr, then walk back over enclosing ranges */
    size_t lo = 0, hi = nranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ranges[mid].start <= vaddr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo, steps = 0; i > 0 && steps < 64; i--, steps++) {
        if (vaddr >= ranges[i - 1].start && vaddr < ranges[i - 1].end) {
            return ranges[i - 1].name;
        }
    }
    return (vaddr >> 63) ? "(kernel)" : "(user)";
}

/* ---- sites ----------------------------------------------------------------------- */

static uint64_t hash_key(uint64_t vaddr, uint32_t word)
{
    uint64_t h = vaddr * 0x9E3779B97F4A7C15ull ^ ((uint64_t)word * 0xC2B2AE3D27D4EB4Full);
    return h ^ (h >> 29);
}

static void htab_insert(struct site *s)
{
    size_t mask = htab_cap - 1;
    size_t i = hash_key(s->vaddr, s->word) & mask;
    while (htab[i]) {
        i = (i + 1) & mask;
    }
    htab[i] = s;
}

/* called with lock held */
static struct site *get_site(uint64_t vaddr, uint32_t word)
{
    if (htab_cap) {
        size_t mask = htab_cap - 1;
        for (size_t i = hash_key(vaddr, word) & mask; htab[i]; i = (i + 1) & mask) {
            if (htab[i]->vaddr == vaddr && htab[i]->word == word) {
                return htab[i];
            }
        }
    }
    struct site *s = calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    s->vaddr = vaddr;
    s->word = word;
    if ((word & MARKER_MASK) == (MARKER_BASE | (MARKER_TAG << 5))) {
        s->cls = SITE_MARKER;
        s->marker_id = (int)((word >> 5) & 0xFF);
        s->kind = "marker";
        s->func = lookup_func(vaddr);
    } else {
        bool owned;
        s->cls = SITE_COUNTED;
        s->kind = classify(word, &owned);
        s->func = lookup_func(vaddr);
        s->count = calloc((size_t)nslots, sizeof(uint64_t));
        if (!s->count) {
            free(s);
            return NULL;
        }
    }
    if (nsites == cap_sites) {
        size_t ncap = cap_sites ? cap_sites * 2 : 1024;
        struct site **ns = realloc(sites, ncap * sizeof(*ns));
        if (!ns) {
            return NULL;
        }
        sites = ns;
        cap_sites = ncap;
    }
    sites[nsites++] = s;
    if (nsites * 2 > htab_cap) {
        size_t ncap = htab_cap ? htab_cap * 2 : 4096;
        struct site **nt = calloc(ncap, sizeof(*nt));
        if (!nt) {
            return NULL;
        }
        free(htab);
        htab = nt;
        htab_cap = ncap;
        for (size_t i = 0; i < nsites; i++) {
            htab_insert(sites[i]);
        }
    } else {
        htab_insert(s);
    }
    return s;
}

static inline unsigned slot_of(unsigned int vcpu_index)
{
    return vcpu_index < (unsigned)nslots - 1 ? vcpu_index : (unsigned)nslots - 1;
}

static inline void slot_add(uint64_t *slots, unsigned int vcpu_index, uint64_t n)
{
    unsigned v = slot_of(vcpu_index);
    if (v == (unsigned)nslots - 1) {
        /* overflow slot, shared: atomic */
        __atomic_fetch_add(&slots[v], n, __ATOMIC_RELAXED);
    } else {
        /* single writer: a relaxed load/store pair is exact and cheaper than a locked add */
        __atomic_store_n(&slots[v], __atomic_load_n(&slots[v], __ATOMIC_RELAXED) + n,
                         __ATOMIC_RELAXED);
    }
}

static uint64_t slot_sum(const uint64_t *slots)
{
    uint64_t t = 0;
    for (int v = 0; v < nslots; v++) {
        t += __atomic_load_n(&slots[v], __ATOMIC_RELAXED);
    }
    return t;
}

/* ---- windows --------------------------------------------------------------------- */

/* called with lock held: write the counts since the previous snapshot */
static void close_window(void)
{
    for (size_t i = 0; i < nsites; i++) {
        struct site *s = sites[i];
        if (s->cls != SITE_COUNTED) {
            continue;
        }
        uint64_t total = slot_sum(s->count);
        uint64_t delta = total - s->last;
        s->last = total;
        if (delta) {
            emit("site 0x%016" PRIx64 " 0x%08" PRIx32 " %s %s %" PRIu64 "\n", s->vaddr,
                 s->word, s->kind, s->func, delta);
        }
    }
    if (count_insns) {
        uint64_t total = slot_sum(insn_count);
        emit("insns %" PRIu64 "\n", total - insn_last);
        insn_last = total;
    }
    emit("endwindow %" PRIu64 "\n", window_seq);
    flush_out();
}

static void on_marker(unsigned int vcpu_index, void *udata)
{
    struct site *s = udata;
    pthread_mutex_lock(&lock);
    close_window();
    window_seq++;
    emit("window %" PRIu64 " %d vcpu=%u\n", window_seq, s->marker_id, vcpu_index);
    flush_out();
    pthread_mutex_unlock(&lock);
}

/* ---- callbacks ------------------------------------------------------------------- */

static void on_counted(unsigned int vcpu_index, void *udata)
{
    struct site *s = udata;
    slot_add(s->count, vcpu_index, 1);
}

static void on_tb_exec(unsigned int vcpu_index, void *udata)
{
    slot_add(insn_count, vcpu_index, (uint64_t)(uintptr_t)udata);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (count_insns) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_size(insn) != 4) {
            continue;
        }
        uint32_t w;
        memcpy(&w, qemu_plugin_insn_data(insn), 4); /* guest and host little-endian */
        bool owned;
        bool marker = (w & MARKER_MASK) == (MARKER_BASE | (MARKER_TAG << 5));
        if (!marker) {
            const char *k = classify(w, &owned);
            if (!k) {
                continue;
            }
            if (owned) {
                free((void *)k);
            }
        }
        pthread_mutex_lock(&lock);
        struct site *s = get_site(qemu_plugin_insn_vaddr(insn), w);
        pthread_mutex_unlock(&lock);
        if (!s) {
            continue; /* out of memory: the site goes uncounted rather than crash QEMU */
        }
        qemu_plugin_register_vcpu_insn_exec_cb(insn, marker ? on_marker : on_counted,
                                               QEMU_PLUGIN_CB_NO_REGS, s);
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *udata)
{
    pthread_mutex_lock(&lock);
    close_window();
    emit("end\n");
    flush_out();
    if (out) {
        fclose(out);
        out = NULL;
    }
    pthread_mutex_unlock(&lock);
}

/* ---- setup ----------------------------------------------------------------------- */

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    /* larger ranges first, so the walk back from the greatest start finds inner ones */
    return x->end > y->end ? -1 : (x->end < y->end ? 1 : 0);
}

static int load_ranges(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "mmlab_barriers: cannot open ranges file %s\n", path);
        return -1;
    }
    char line[4096];
    size_t cap = 0, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '#' || *p == '\n' || *p == '\0') {
            continue;
        }
        unsigned long long start, end;
        char name[1024];
        if (sscanf(p, "%llx %llx %1023s", &start, &end, name) != 3 || end <= start) {
            fprintf(stderr, "mmlab_barriers: %s:%zu: expected 'start end name'\n", path,
                    lineno);
            fclose(f);
            return -1;
        }
        if (nranges == cap) {
            cap = cap ? cap * 2 : 256;
            struct range *nr = realloc(ranges, cap * sizeof(*nr));
            if (!nr) {
                fclose(f);
                return -1;
            }
            ranges = nr;
        }
        ranges[nranges].start = start;
        ranges[nranges].end = end;
        ranges[nranges].name = strdup(name);
        nranges++;
    }
    fclose(f);
    qsort(ranges, nranges, sizeof(*ranges), cmp_range);
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *out_path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        if (!eq) {
            fprintf(stderr, "mmlab_barriers: bad argument '%s' (want key=value)\n", a);
            return -1;
        }
        size_t klen = (size_t)(eq - a);
        const char *val = eq + 1;
        if (klen == 3 && !strncmp(a, "out", 3)) {
            out_path = val;
        } else if (klen == 6 && !strncmp(a, "ranges", 6)) {
            if (load_ranges(val)) {
                return -1;
            }
        } else if (klen == 5 && !strncmp(a, "insns", 5)) {
            if (!qemu_plugin_bool_parse("insns", val, &count_insns)) {
                fprintf(stderr, "mmlab_barriers: insns=%s is not a boolean\n", val);
                return -1;
            }
        } else {
            fprintf(stderr, "mmlab_barriers: unknown argument '%s'\n", a);
            return -1;
        }
    }
    if (info->system_emulation && info->system.max_vcpus > 0) {
        nslots = info->system.max_vcpus + 1;
    } else {
        nslots = 1; /* user mode: one shared, atomic slot */
    }
    insn_count = calloc((size_t)nslots, sizeof(uint64_t));
    if (!insn_count) {
        return -1;
    }
    if (out_path) {
        out = fopen(out_path, "w");
        if (!out) {
            fprintf(stderr, "mmlab_barriers: cannot write %s\n", out_path);
            return -1;
        }
    }
    emit("mmlab-barriers 1\n");
    emit("config vcpus=%d insns=%d ranges=%zu target=%s\n", nslots - 1, count_insns ? 1 : 0,
         nranges, info->target_name ? info->target_name : "?");
    emit("window 0 boot vcpu=0\n");
    flush_out();
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}

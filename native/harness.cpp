// VMShm's native backend: the Verilated system top, run cycle by cycle in C++.
//
// Python (vmshm.native.engine) submits one guest transaction at a time and calls vm_run, which
// runs clock cycles until the transaction completes or until it needs Python: the control
// channel's answer (the host model's rules live in Python), a DMA answer from a host model that
// overrides HostModel's DMA, or more back-pressure draws (drawn in Python by HostStalls). Plain
// host models' DMA is served here with pread/pwrite on the real POSIX object's descriptor (as
// ShmRegion does: a mapping can SIGBUS), after the bounds checks of HostModel._clip; whatever
// those refuse, or the system call fails, goes to Python, so HostModel refuses, counts and logs.
//
// The handshakes follow harness/bfm.py (the specification; the scenario suite compares records):
// every BFM acts at a drive point just after a rising edge; a beat moves at the next edge where
// valid and ready are both high. A put or get is a series of tries; each try draws its gate once;
// a try with the signal high lasts until the beat moves, one with it low lasts one cycle.
//
// Port names, payload widths and field offsets come from the generated vmshm_ports.h (made from
// rtl/layouts.py at build time): nothing here knows a bit position. So do the Shared block and
// every code Python reads (native/shared.py): Status, Channel, Kind, the OP_ and IRQ_ codes,
// FaultChannel, FaultKind and VMSHM_MAX_BURST.

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "verilated.h"
#ifdef VMSHM_TRACE
#include "verilated_vcd_c.h"
#endif

// One stream's ports on the Verilated top: the payload as little-endian bytes (a CData..QData
// or a VlWide's words: both are little-endian storage on the hosts this runs on).
struct Stream {
    uint8_t* valid;
    uint8_t* ready;
    uint8_t* payload;
    int nbytes;
};

template <typename T>
static inline uint8_t* payload_bytes(T& port) { return reinterpret_cast<uint8_t*>(&port); }
template <std::size_t N>
static inline uint8_t* payload_bytes(VlWide<N>& port) {
    return reinterpret_cast<uint8_t*>(port.data());
}
#define VMSHM_STREAM(s, v, r, p) \
    (s) = Stream{&(v), &(r), payload_bytes(p), (int)sizeof(p)}

#include "vmshm_ports.h"

namespace {

// A payload being assembled or taken apart, a few 32-bit words wide.
struct Beat {
    uint32_t w[VMSHM_PAYLOAD_WORDS];
    void clear() { memset(w, 0, sizeof w); }
    uint64_t get(int off, int width) const {
        uint64_t v = 0;
        for (int i = 0; i < width;) {
            int word = (off + i) >> 5, bit = (off + i) & 31;
            int take = 32 - bit < width - i ? 32 - bit : width - i;
            uint64_t mask = take == 32 ? 0xffffffffull : ((1ull << take) - 1);
            v |= ((uint64_t)(w[word] >> bit) & mask) << i;
            i += take;
        }
        return v;
    }
    void set(int off, int width, uint64_t v) {
        for (int i = 0; i < width;) {
            int word = (off + i) >> 5, bit = (off + i) & 31;
            int take = 32 - bit < width - i ? 32 - bit : width - i;
            uint32_t mask = take == 32 ? 0xffffffffu : ((1u << take) - 1);
            w[word] = (w[word] & ~(mask << bit)) | ((uint32_t)(v >> i) & mask) << bit;
            i += take;
        }
    }
    void load(const Stream& s) {
        clear();
        memcpy(w, s.payload, s.nbytes);
    }
    void store(const Stream& s) const { memcpy(s.payload, w, s.nbytes); }
};
#define FIELD(beat, KIND, NAME) (beat).get(KIND##_##NAME##_OFF, KIND##_##NAME##_W)
#define SET_FIELD(beat, KIND, NAME, v) (beat).set(KIND##_##NAME##_OFF, KIND##_##NAME##_W, (v))

struct Draws {
    bool active = false;
    std::vector<uint8_t> buf;
    size_t pos = 0;
    bool empty() const { return active && pos == buf.size(); }
    bool take() {
        if (!active) return true;
        bool v = buf[pos++];
        if (pos == buf.size()) {
            buf.clear();
            pos = 0;
        }
        return v;
    }
};

// One try of a get (sink) or a put (source) on a stream.
struct Try {
    bool on = false;    // a try is under way
    bool high = false;  // this try's ready (get) or valid (put)
    bool start(Draws& d) {
        if (!on) {
            high = d.take();
            on = true;
        }
        return high;
    }
    // After the edge: return whether the beat moved; end the try if it moved or was low.
    bool end(bool other) {
        bool moved = high && other;
        if (moved || !high) on = false;
        return moved;
    }
};

struct Event {
    uint64_t cycle;
    uint8_t kind, op;
};

struct Irq {
    uint64_t cycle, addr;
    uint32_t data;
    uint8_t kind;
};

enum CtlState { C_GET, C_PENDING, C_WAIT, C_PUT, C_STALL };
enum DmaState { D_HDR, D_DATA, D_PENDING, D_WAIT, D_PUT_W, D_PUT_R, D_STALL };

// HostFaults (vmshm.host_model.faults), handed over by Python: what goes wrong with which
// exchange on which channel (FaultChannel, FaultKind). HostBFM's _answer and _stall are the
// specification.
struct Fault {
    uint64_t channel, kind, exchange, beat, cycles;
};
// An answer's beats go out in up to three rounds: one nobody asked for, the answer, again.
enum Round { R_UNASKED, R_ANSWER, R_DOUBLE, R_DONE };

struct Device {
    Stream ctl_req, ctl_rsp, dma_req, dma_rsp, db, ring, msi;
    uint8_t* peer_valid;
    uint16_t* peer_id;
    uint8_t* intx;
    Draws draws[CHANNELS];
    std::vector<Fault> faults;
    // Exchanges taken on each channel, counted as HostBFM counts them (RESET packets too).
    uint64_t exchanges[FAULT_CHANNELS] = {};
    // Whether the stall before the next request beat was looked up (once per beat, at the
    // drive point its get starts, as HostBFM's _stall), and where a stall goes back to.
    bool cchecked = false, dchecked = false;
    uint64_t cstall = 0, dstall = 0;
    DmaState dresume = D_HDR;
    // The faults of the exchange being answered: bit k is FaultKind k; and its late cycles.
    int cfaults = 0, dfaults = 0;
    uint64_t clate = 0, dlate = 0;
    Round cround = R_DONE, dround = R_DONE;
    uint32_t dma_latency = 0;
    bool fast = false;  // DMA served here from the mapping, else by Python
    // The open object: our own copy of the host model's descriptor, and its size at OPEN.
    int fd = -1;
    uint64_t size = 0;
    std::vector<Event> events;
    // control process
    CtlState cs = C_GET;
    Try ctry;
    bool cfirst = true;
    int cop = 0;
    bool creset = false;  // the packet holds a RESET beat
    uint64_t ctag = 0;
    // RESET packets seen: a DMA request from before one is dropped (HostBFM._resets).
    uint64_t resets = 0;
    std::vector<uint8_t> name;
    uint64_t cwait = 0;
    Beat crsp;
    // DMA process
    DmaState ds = D_HDR;
    Try dtry;
    bool dwrite = false, dok = false;
    uint64_t daddr = 0, dtag = 0, depoch = 0;
    int dwords = 0, di = 0;
    uint64_t dwait = 0;
    uint64_t ddata[VMSHM_MAX_BURST];
    uint32_t dbe[VMSHM_MAX_BURST];
    // doorbell process (HostBFM.db_process): always ready, but for a stall of an exchange
    uint64_t db_exchange = 0, db_wait = 0;
    std::vector<std::pair<uint64_t, uint64_t>> db_stalls;  // (exchange, cycles)
    bool db_pending = false;  // taken; Python hands it to the host model
    uint32_t db_peer = 0, db_vector = 0;
    // ring process (HostBFM.ring_process): the rings Python queued, one a cycle
    std::vector<uint16_t> rings;
    size_t ring_pos = 0;
    // the guest's view of the function's interrupts
    bool intx_level = false;
    std::vector<Irq> irqs;
    size_t irqs_told = 0;
};

enum GuestState { G_IDLE, G_PUT, G_GET, G_WAIT, G_RESET, G_DONE };

struct Sim {
    Top* top;
    VerilatedContext* ctx;
#ifdef VMSHM_TRACE
    VerilatedVcdC* vcd = nullptr;
#endif
    uint64_t time = 0;
    Stream req, cpl;
    Device dev[VMSHM_DEVICES];
    // the guest's transaction
    GuestState gs = G_IDLE;
    Beat beats[VMSHM_MAX_BURST];
    int nbeats = 0, gi = 0, ncpl = 0, gj = 0;
    uint64_t out[VMSHM_MAX_BURST];
    // Where a read's data goes as bytes when it completes (vm_go_bytes), or null.
    uint8_t* dst = nullptr;
    int status = 0;
    uint64_t waited = 0, timeout = 0, idle_left = 0, reset_left = 0;
    // Read and written by Python through a memoryview (vm_shared), so that a one-word access
    // costs one call with no argument conversions: the QEMU guest waits for every one of them.
    Shared pub = {};
    // A clock edge has run since vm_new: the first drive point is the BFM processes' start.
    bool edged = false;
    // The top's counter restarts at a function reset (rst resets it too); the cycle number
    // does not, as in Amaranth's simulator, whose reset spares the counter.
    uint64_t offset = 0;
    // The top's inputs (every port the harness drives, and rst) and their values at the last
    // settle: the clock-low eval() is skipped when none changed (settle()).
    // One-byte inputs (valid, ready, rst) apart from the wider ones: compared without a call.
    std::vector<uint8_t*> flags;
    std::vector<uint8_t> flags_settled;
    std::vector<std::pair<uint8_t*, int>> inputs;
    std::vector<uint8_t> settled;
    bool fresh = false;  // `settled` holds the inputs the model last settled with
    uint64_t input_passes = 0;  // settles that ran eval()'s input pass (vm_input_passes)
};

static void eval(Sim* s) {
    s->top->eval();
#ifdef VMSHM_TRACE
    if (s->vcd) s->vcd->dump(s->time);
#endif
    s->time += 5000;  // ps: a 10 ns clock, as in Amaranth's simulator
}

// The rising edge, after eval() settled the inputs with the clock low. Verilator's eval() starts
// every call with its input-combinational pass ("ico": here most of the logic, as the payloads
// reach far), and at the edge the inputs are the ones that pass has just settled, so it would
// only compute the same again: about a third of a cycle's time. The edge runs the rest of
// eval() (Verilator's active and NBA phases, looped as its _eval loops them) and nothing else
// changes. A Verilator whose phases are named otherwise leaves the weak symbols null: eval().
static void edge(Sim* s) {
    if (!VMSHM_PHASE_ACT || !VMSHM_PHASE_NBA) return eval(s);
    Root* r = s->top->rootp;
    // Verilator gives up after 10000 rounds (a combinational loop); so does this, through
    // eval(), which then reports it.
    for (int n = 0;; n++) {
        if (n == 10000) return eval(s);
        while (VMSHM_PHASE_ACT(r)) {
        }
        if (!VMSHM_PHASE_NBA(r)) break;
    }
#ifdef VMSHM_TRACE
    if (s->vcd) s->vcd->dump(s->time);
#endif
    s->time += 5000;
}

// Note the top's inputs (Stream: the side the harness drives) for settle().
static void note_inputs(Sim* s) {
    auto in = [s](void* p, int n) {
        if (n == 1)
            s->flags.push_back((uint8_t*)p);
        else
            s->inputs.emplace_back((uint8_t*)p, n);
    };
    auto source = [&](const Stream& st) {  // the harness puts beats on it
        in(st.valid, 1);
        in(st.payload, st.nbytes);
    };
    source(s->req);
    in(s->cpl.ready, 1);
    for (Device& d : s->dev) {
        in(d.ctl_req.ready, 1);
        source(d.ctl_rsp);
        in(d.dma_req.ready, 1);
        source(d.dma_rsp);
        in(d.db.ready, 1);
        source(d.ring);
        in(d.msi.ready, 1);
        in(d.peer_valid, 1);
        in(d.peer_id, 2);
    }
    in(&s->top->rst, 1);
    int total = 0;
    for (auto& p : s->inputs) total += p.second;
    s->settled.resize(total);
    s->flags_settled.resize(s->flags.size());
}

// The clock falls and the inputs just driven settle. eval() starts with its input pass ("ico"),
// which computes the logic the inputs reach (as much as a rising edge's work here); when no
// input changed since the last settle, that pass would compute what the last edge's NBA phase
// left (Verilator recomputes there all logic the state reaches), so only the clock's fall is
// shown to the model: its active phase, which notes the clock low for the next edge's trigger.
// Every scenario's records are unchanged (tests/test_native.py compares them with Amaranth's).
static void settle(Sim* s) {
    bool changed = false;
    for (size_t k = 0; k < s->flags.size(); k++) {
        uint8_t v = *s->flags[k];
        changed |= v != s->flags_settled[k];
        s->flags_settled[k] = v;
    }
    uint8_t* at = s->settled.data();
    for (auto& p : s->inputs) {
        if (memcmp(at, p.first, p.second) != 0) {
            memcpy(at, p.first, p.second);
            changed = true;
        }
        at += p.second;
    }
    bool same = !changed && s->fresh && VMSHM_PHASE_ACT && VMSHM_PHASE_NBA;
#ifdef VMSHM_TRACE
    same = false;  // eval() dumps the waves
#endif
    s->fresh = true;
    if (!same) {
        s->input_passes++;
        return eval(s);
    }
    Root* r = s->top->rootp;
    for (int n = 0;; n++) {
        if (n == 10000) return eval(s);
        while (VMSHM_PHASE_ACT(r)) {
        }
        if (!VMSHM_PHASE_NBA(r)) break;
    }
    s->time += 5000;
}

static void stamp(Device& d, uint64_t cycle, int kind, int op) {
    d.events.push_back(Event{cycle, (uint8_t)kind, (uint8_t)op});
}

// HostModel._clip: the end of the real bytes of [off, off + n), or false if refused. A read
// need not ask the object's current size (a system call on the path of every guest load): if
// it shrank below `end`, pread comes back short and the request goes to Python, which refuses.
// A write must ask, or pwrite would grow the object.
static bool clip(Device& d, uint64_t off, uint64_t n, uint64_t& end, bool sized) {
    if (d.fd < 0 || off >= d.size) return false;
    end = off + n < d.size ? off + n : d.size;
    if (!sized) return true;
    struct stat st;
    if (fstat(d.fd, &st) != 0) return false;
    // The object shrank under us: writing there would make it larger again.
    return end <= (uint64_t)st.st_size;
}

static const int WB = VMSHM_DATA_WIDTH / 8;

// HostFaults.of: the kinds (a bit each) naming this exchange, the last of a kind winning.
static int faults_of(const Device& d, int channel, uint64_t exchange, uint64_t* late) {
    int kinds = 0;
    for (const Fault& f : d.faults) {
        if (f.channel != (uint64_t)channel || f.exchange != exchange) continue;
        kinds |= 1 << f.kind;
        if (f.kind == F_LATE) *late = f.cycles;
    }
    return kinds;
}

// HostFaults.stall: cycles to wait before taking request beat `beat` of the exchange.
static uint64_t stall_of(const Device& d, int channel, uint64_t exchange, uint64_t beat) {
    const Fault* last = nullptr;
    for (const Fault& f : d.faults)
        if (f.channel == (uint64_t)channel && f.exchange == exchange && f.kind == F_STALL)
            last = &f;
    return last && last->beat == beat ? last->cycles : 0;
}

// The first round of an answer: the unasked one, the answer, or none (dropped).
static Round first_round(int kinds) {
    if (kinds >> F_UNASKED & 1) return R_UNASKED;
    return kinds >> F_DROP & 1 ? R_DONE : R_ANSWER;
}

// The round after `r`, all its beats gone.
static Round next_round(Round r, int kinds) {
    if (r == R_UNASKED) return kinds >> F_DROP & 1 ? R_DONE : R_ANSWER;
    if (r == R_ANSWER && kinds >> F_DOUBLE & 1) return R_DOUBLE;
    return R_DONE;
}

// A tag no request had: the request's, half the tag space away.
static uint64_t other_tag(uint64_t tag, int width) {
    return (tag + (1ull << (width - 1))) % (1ull << width);
}

// Read the request's bytes; return false (nothing decided) if Python must serve it.
static bool dma_read(Device& d) {
    uint64_t n = (uint64_t)d.dwords * WB, end;
    uint8_t bytes[VMSHM_MAX_BURST * 8];
    if (!clip(d, d.daddr, n, end, false)) return false;
    memset(bytes, 0xff, n);  // bytes past the object's end
    for (uint64_t got = 0; got < end - d.daddr;) {
        ssize_t r = pread(d.fd, bytes + got, end - d.daddr - got, d.daddr + got);
        if (r <= 0) return false;
        got += r;
    }
    for (int i = 0; i < d.dwords; i++) {
        d.ddata[i] = 0;
        memcpy(&d.ddata[i], bytes + i * WB, WB);
    }
    d.dok = true;
    return true;
}

static bool store(Device& d, uint64_t off, const uint8_t* bytes, uint64_t n) {
    for (uint64_t put = 0; put < n;) {
        ssize_t r = pwrite(d.fd, bytes + put, n - put, off + put);
        if (r <= 0) return false;
        put += r;
    }
    return true;
}

// Store the request's enabled bytes, each run of them at once, as ShmRegion.write does.
static bool dma_write(Device& d) {
    uint64_t n = (uint64_t)d.dwords * WB, end;
    if (!clip(d, d.daddr, n, end, true)) return false;
    uint8_t bytes[VMSHM_MAX_BURST * 8];
    for (int i = 0; i < d.dwords; i++) memcpy(bytes + i * WB, &d.ddata[i], WB);
    uint64_t keep = end - d.daddr, b = 0;
    while (b < keep) {
        if (!(d.dbe[b / WB] >> (b % WB) & 1)) {
            b++;
            continue;
        }
        uint64_t e = b;
        while (e < keep && d.dbe[e / WB] >> (e % WB) & 1) e++;
        if (!store(d, d.daddr + b, bytes + b, e - b)) return false;
        b = e;
    }
    d.dok = true;
    return true;
}

// The DMA answer is known: wait the latency (HostBFM's io.wait), then answer.
static void dma_next(Device& d) {
    d.ds = D_HDR;
    d.dchecked = false;
}

static void dma_waited(Device& d) {
    // A reset of the device since the request: nobody waits for this answer any more.
    d.dround = first_round(d.dfaults);
    if (d.resets != d.depoch || d.dround == R_DONE)
        dma_next(d);
    else
        d.ds = d.dwrite ? D_PUT_W : D_PUT_R;
}

static void dma_answered(Device& d, uint32_t latency) {
    d.di = 0;
    uint64_t wait = latency + (d.dfaults >> F_LATE & 1 ? d.dlate : 0);
    if (wait) {
        d.dwait = wait;
        d.ds = D_WAIT;
    } else {
        dma_waited(d);
    }
}

static void dma_request_done(Device& d, uint64_t cycle) {
    stamp(d, cycle, EV_DMA_REQ_LAST, d.dwrite ? OP_WRITE : OP_READ);
    if (d.fast && (d.dwrite ? dma_write(d) : dma_read(d)))
        dma_answered(d, d.dma_latency);
    else
        d.ds = D_PENDING;
}

// A request's first beat moved.
static void dma_header(Device& d, const Beat& b, uint64_t now) {
    d.depoch = d.resets;
    d.dchecked = false;
    d.dlate = 0;
    d.dfaults = faults_of(d, FC_DMA, d.exchanges[FC_DMA]++, &d.dlate);
    d.daddr = FIELD(b, DMA_REQ, ADDR);
    d.dwords = (int)FIELD(b, DMA_REQ, COUNT) + 1;
    d.dwrite = FIELD(b, DMA_REQ, WRITE);
    d.dtag = FIELD(b, DMA_REQ, TAG);
    stamp(d, now, EV_DMA_REQ_FIRST, d.dwrite ? OP_WRITE : OP_READ);
    if (d.dwrite) {
        d.ddata[0] = FIELD(b, DMA_REQ, DATA);
        d.dbe[0] = (uint32_t)FIELD(b, DMA_REQ, BE);
        d.di = 1;
        if (d.dwords == 1)
            dma_request_done(d, now);
        else
            d.ds = D_DATA;
    } else {
        dma_request_done(d, now);
    }
}

// The control process takes the next packet (HostBFM.ctl_process's loop).
static void ctl_next(Device& d) {
    d.cs = C_GET;
    d.cfirst = true;
    d.cchecked = false;
}

// The control answer's latency is over: its rounds go out, if any.
static void ctl_waited(Device& d) {
    d.cround = first_round(d.cfaults);
    if (d.cround == R_DONE)
        ctl_next(d);
    else
        d.cs = C_PUT;
}

// A stall begun at the processes' start lasts one edge more: Amaranth's wait from time 0, which
// is not just after an edge, lands on an edge and takes the next (vmshm.sim.bfm.wait_cycles),
// and Amaranth's records are the reference.
static uint64_t stall_from(const Sim* s, uint64_t cycles) {
    return cycles && !s->edged ? cycles + 1 : cycles;
}

// Drive point: every BFM sets what it drives this cycle.
static void drive(Sim* s) {
    *s->req.valid = s->gs == G_PUT;
    if (s->gs == G_PUT) s->beats[s->gi].store(s->req);
    *s->cpl.ready = s->gs == G_GET;
    for (Device& d : s->dev) {
        if (d.cs == C_GET && !d.cchecked) {
            d.cchecked = true;
            uint64_t beat = d.cfirst ? 0 : d.name.size();
            d.cstall = stall_from(s, stall_of(d, FC_CTL, d.exchanges[FC_CTL], beat));
            if (d.cstall) d.cs = C_STALL;
        }
        if ((d.ds == D_HDR || d.ds == D_DATA) && !d.dchecked) {
            d.dchecked = true;
            bool hdr = d.ds == D_HDR;
            d.dstall = stall_from(s, stall_of(d, FC_DMA, d.exchanges[FC_DMA] - !hdr,
                                              hdr ? 0 : d.di));
            if (d.dstall) {
                d.dresume = d.ds;
                d.ds = D_STALL;
            }
        }
        *d.ctl_req.ready = d.cs == C_GET ? d.ctry.start(d.draws[CH_CTL_READY]) : 0;
        if (d.cs == C_PUT) {
            Beat b = d.crsp;
            if (d.cround == R_UNASKED) {
                SET_FIELD(b, CTL_RSP, STATUS, 0);  // Status.OK
                SET_FIELD(b, CTL_RSP, SIZE, 1ull << 20);
                SET_FIELD(b, CTL_RSP, TAG, other_tag(d.ctag, CTL_RSP_TAG_W));
            }
            b.store(d.ctl_rsp);
            *d.ctl_rsp.valid = d.ctry.start(d.draws[CH_CTL_RSP]);
        } else {
            *d.ctl_rsp.valid = 0;
        }
        bool get = d.ds == D_HDR || d.ds == D_DATA;
        *d.dma_req.ready = get ? d.dtry.start(d.draws[CH_DMA_READY]) : 0;
        if (d.ds == D_PUT_W || d.ds == D_PUT_R) {
            Beat b;
            b.clear();
            bool last = d.ds == D_PUT_W || d.di == d.dwords - 1;
            bool unasked = d.dround == R_UNASKED;
            uint64_t ones = WB == 8 ? ~0ull : (1ull << (8 * WB)) - 1;
            SET_FIELD(b, DMA_RSP, DATA, unasked ? ones : d.ds == D_PUT_R ? d.ddata[d.di] : 0);
            SET_FIELD(b, DMA_RSP, ERR, !d.dok);
            SET_FIELD(b, DMA_RSP, LAST, last);
            SET_FIELD(b, DMA_RSP, TAG, unasked ? other_tag(d.dtag, DMA_RSP_TAG_W) : d.dtag);
            b.store(d.dma_rsp);
            *d.dma_rsp.valid = d.dtry.start(d.draws[CH_DMA_RSP]);
        } else {
            *d.dma_rsp.valid = 0;
        }
        *d.db.ready = d.db_wait == 0;
        *d.ring.valid = d.ring_pos < d.rings.size();
        if (*d.ring.valid) {
            Beat b;
            b.clear();
            SET_FIELD(b, RING, VECTOR, d.rings[d.ring_pos]);
            b.store(d.ring);
        }
        *d.msi.ready = 1;
    }
}

static uint64_t db_stall(const Device& d, uint64_t exchange) {
    for (auto& st : d.db_stalls)
        if (st.first == exchange) return st.second;
    return 0;
}

struct Sampled {
    bool req_ready, cpl_valid;
    bool ctl_req_valid[VMSHM_DEVICES], ctl_rsp_ready[VMSHM_DEVICES];
    bool dma_req_valid[VMSHM_DEVICES], dma_rsp_ready[VMSHM_DEVICES];
    bool db_valid[VMSHM_DEVICES], ring_ready[VMSHM_DEVICES], msi_valid[VMSHM_DEVICES];
};

// One clock cycle from a drive point to the next.
static void cycle(Sim* s) {
    drive(s);
    s->top->clk = 0;
    settle(s);
    // What the edge is about to sample: the settled values.
    Sampled p;
    Beat cpl, ctl[VMSHM_DEVICES], dma[VMSHM_DEVICES], db[VMSHM_DEVICES], msi[VMSHM_DEVICES];
    p.req_ready = *s->req.ready;
    p.cpl_valid = *s->cpl.valid;
    if (p.cpl_valid && s->gs == G_GET) cpl.load(s->cpl);
    for (int i = 0; i < VMSHM_DEVICES; i++) {
        Device& d = s->dev[i];
        p.ctl_req_valid[i] = *d.ctl_req.valid;
        p.ctl_rsp_ready[i] = *d.ctl_rsp.ready;
        p.dma_req_valid[i] = *d.dma_req.valid;
        p.dma_rsp_ready[i] = *d.dma_rsp.ready;
        if (p.ctl_req_valid[i] && d.cs == C_GET) ctl[i].load(d.ctl_req);
        if (p.dma_req_valid[i] && (d.ds == D_HDR || d.ds == D_DATA)) dma[i].load(d.dma_req);
        p.db_valid[i] = *d.db.valid && *d.db.ready;
        if (p.db_valid[i]) db[i].load(d.db);
        p.ring_ready[i] = *d.ring.ready;
        p.msi_valid[i] = *d.msi.valid;
        if (p.msi_valid[i]) msi[i].load(d.msi);
    }
    s->top->clk = 1;
    edge(s);
    s->edged = true;
    uint64_t now = s->top->cycle + s->offset;
    s->pub.cycle = now;
    // The guest.
    switch (s->gs) {
        case G_PUT:
            if (p.req_ready) {
                s->waited = 0;
                if (++s->gi == s->nbeats) s->gs = G_GET;
            } else {
                s->waited++;
            }
            break;
        case G_GET:
            if (p.cpl_valid) {
                s->waited = 0;
                s->out[s->gj] = FIELD(cpl, CPL, DATA);
                int st = (int)FIELD(cpl, CPL, STATUS);
                if (st > s->status) s->status = st;
                if (++s->gj == s->ncpl) s->gs = G_DONE;
            } else {
                s->waited++;
            }
            break;
        case G_WAIT:
            if (--s->idle_left == 0) s->gs = G_DONE;
            break;
        default:
            break;
    }
    for (int i = 0; i < VMSHM_DEVICES; i++) {
        Device& d = s->dev[i];
        // The control process.
        switch (d.cs) {
            case C_GET:
                if (d.ctry.end(p.ctl_req_valid[i])) {
                    int op = (int)FIELD(ctl[i], CTL_REQ, OP);
                    if (d.cfirst) {
                        d.cop = op;
                        d.creset = false;
                        d.name.clear();
                        if (op != OP_RESET) stamp(d, now, EV_CTL_REQ_FIRST, d.cop);
                        d.cfirst = false;
                    }
                    d.creset |= op == OP_RESET;
                    d.name.push_back((uint8_t)FIELD(ctl[i], CTL_REQ, DATA));
                    d.cchecked = false;
                    if (FIELD(ctl[i], CTL_REQ, LAST)) {
                        d.ctag = FIELD(ctl[i], CTL_REQ, TAG);
                        d.clate = 0;
                        d.cfaults = faults_of(d, FC_CTL, d.exchanges[FC_CTL]++, &d.clate);
                        if (d.creset) {
                            // Python releases the object (HostModel.reset); no answer.
                            d.resets++;
                            stamp(d, now, EV_RESET, OP_RESET);
                        } else {
                            stamp(d, now, EV_CTL_REQ_LAST, d.cop);
                        }
                        d.cs = C_PENDING;
                    }
                }
                break;
            case C_WAIT:
                if (--d.cwait == 0) ctl_waited(d);
                break;
            case C_STALL:
                if (--d.cstall == 0) d.cs = C_GET;
                break;
            case C_PUT:
                if (d.ctry.end(p.ctl_rsp_ready[i])) {
                    if (d.cround == R_ANSWER) stamp(d, now, EV_CTL_RSP, d.cop);
                    d.cround = next_round(d.cround, d.cfaults);
                    if (d.cround == R_DONE) ctl_next(d);
                }
                break;
            default:
                break;
        }
        // The DMA process.
        switch (d.ds) {
            case D_HDR:
                if (d.dtry.end(p.dma_req_valid[i])) dma_header(d, dma[i], now);
                break;
            case D_DATA:
                if (d.dtry.end(p.dma_req_valid[i])) {
                    if (d.resets != d.depoch) {
                        // The write was cut off by a reset of the device: this beat starts
                        // the next request.
                        dma_header(d, dma[i], now);
                        break;
                    }
                    d.ddata[d.di] = FIELD(dma[i], DMA_REQ, DATA);
                    d.dbe[d.di] = (uint32_t)FIELD(dma[i], DMA_REQ, BE);
                    d.dchecked = false;
                    if (++d.di == d.dwords) dma_request_done(d, now);
                }
                break;
            case D_WAIT:
                if (--d.dwait == 0) dma_waited(d);
                break;
            case D_STALL:
                if (--d.dstall == 0) d.ds = d.dresume;
                break;
            case D_PUT_W:
            case D_PUT_R:
                if (d.dtry.end(p.dma_rsp_ready[i])) {
                    bool answer = d.dround == R_ANSWER;
                    int op = d.dwrite ? OP_WRITE : OP_READ;
                    if (answer && d.di == 0) stamp(d, now, EV_DMA_RSP_FIRST, op);
                    if (++d.di == (d.dwrite ? 1 : d.dwords)) {
                        if (answer) stamp(d, now, EV_DMA_RSP_LAST, op);
                        d.di = 0;
                        d.dround = next_round(d.dround, d.dfaults);
                        if (d.dround == R_DONE) dma_next(d);
                    }
                }
                break;
            default:
                break;
        }
        // The doorbell process.
        if (d.db_wait) {
            d.db_wait--;
        } else if (p.db_valid[i]) {
            stamp(d, now, EV_DB, OP_DOORBELL);
            d.db_pending = true;
            d.db_peer = (uint32_t)FIELD(db[i], DB, PEER);
            d.db_vector = (uint32_t)FIELD(db[i], DB, VECTOR);
            d.db_wait = db_stall(d, ++d.db_exchange);
        }
        // The ring process.
        if (d.ring_pos < d.rings.size() && p.ring_ready[i]) {
            stamp(d, now, EV_RING, OP_RING);
            if (++d.ring_pos == d.rings.size()) {
                d.rings.clear();
                d.ring_pos = 0;
            }
        }
        // The guest's interrupt controller: MSI messages taken, INTx rising edges.
        if (p.msi_valid[i])
            d.irqs.push_back(Irq{now, FIELD(msi[i], MSI, ADDR),
                                 (uint32_t)FIELD(msi[i], MSI, DATA), IRQ_MSI});
        bool level = *d.intx;
        if (level && !d.intx_level) d.irqs.push_back(Irq{now, 0, 0, IRQ_INTX});
        d.intx_level = level;
    }
}

static void forget(Device& d) {
    if (d.fd >= 0) close(d.fd);
    d.size = 0;
    d.fd = -1;
}

}  // namespace

extern "C" {

//! Return the number of devices and the data width this library was built for.
int vm_config(int* devices, int* data_width) {
    *devices = VMSHM_DEVICES;
    *data_width = VMSHM_DATA_WIDTH;
    return VMSHM_PAYLOAD_WORDS;
}

//! Return whether the rising edge runs Verilator's phases (edge()), not a whole eval().
int vm_edge_phases(void) { return VMSHM_PHASE_ACT && VMSHM_PHASE_NBA; }

//! Make a simulation, held in reset for three cycles and released at cycle 0. `vcd` may be null.
void* vm_new(const char* vcd) {
    Sim* s = new Sim();
    s->ctx = new VerilatedContext;
    s->top = new Top(s->ctx);
    VMSHM_BIND(s->top, s->req, s->cpl, s->dev);
    note_inputs(s);
#ifdef VMSHM_TRACE
    if (vcd) {
        s->ctx->traceEverOn(true);
        s->vcd = new VerilatedVcdC;
        s->top->trace(s->vcd, 99);
        s->vcd->open(vcd);
    }
#else
    (void)vcd;
#endif
    s->top->rst = 1;
    s->top->clk = 0;
    eval(s);
    for (int i = 0; i < 3; i++) {
        s->top->clk = 1;
        eval(s);
        s->top->clk = 0;
        eval(s);
    }
    s->top->rst = 0;
    s->pub.cycle = s->top->cycle;
    return s;
}

void vm_free(void* h) {
    Sim* s = (Sim*)h;
    for (Device& d : s->dev) forget(d);
    s->top->final();
#ifdef VMSHM_TRACE
    if (s->vcd) {
        s->vcd->close();
        delete s->vcd;
    }
#endif
    delete s->top;
    delete s->ctx;
    delete s;
}

uint64_t vm_now(void* h) { return ((Sim*)h)->pub.cycle; }

//! How many clock-low settles ran eval()'s input pass (the others had no input changed).
uint64_t vm_input_passes(void* h) { return ((Sim*)h)->input_passes; }

//! The address of the Shared block Python reads and writes in place (vm_word, vm_now).
uint64_t* vm_shared(void* h) { return reinterpret_cast<uint64_t*>(&((Sim*)h)->pub); }

//! Set device `i`'s DMA latency (for DMA served here) and which back-pressure channels draw
//! (bit c: channel c). The control channel's latency comes with each answer.
void vm_set_timing(void* h, int i, uint32_t dma_latency, int gates) {
    Device& d = ((Sim*)h)->dev[i];
    d.dma_latency = dma_latency;
    for (int c = 0; c < CHANNELS; c++) d.draws[c].active = gates >> c & 1;
}

void vm_add_draws(void* h, int i, int c, const uint8_t* draws, int n) {
    Draws& d = ((Sim*)h)->dev[i].draws[c];
    d.buf.insert(d.buf.end(), draws, draws + n);
}

//! Serve device `i`'s DMA here (`fast`) or in Python.
void vm_set_fast(void* h, int i, int fast) { ((Sim*)h)->dev[i].fast = fast; }

//! Serve the object open on device `i`'s host (its descriptor `fd`, `size` bytes when it was
//! opened), or forget it (fd < 0). Return 0 or an errno.
int vm_set_region(void* h, int i, int fd, uint64_t size) {
    Device& d = ((Sim*)h)->dev[i];
    forget(d);
    if (fd < 0 || size == 0) return 0;
    int own = dup(fd);
    if (own < 0) return errno;
    d.fd = own;
    d.size = size;
    return 0;
}

//! Start a guest burst: `nbeats` request beats (a read: one), then its completions.
void vm_submit(void* h, int space, int devno, uint64_t addr, int write, int count, int nbeats,
               const uint64_t* data, const uint32_t* be, uint64_t timeout) {
    Sim* s = (Sim*)h;
    for (int i = 0; i < nbeats; i++) {
        Beat& b = s->beats[i];
        b.clear();
        SET_FIELD(b, REQ, SPACE, space);
        SET_FIELD(b, REQ, DEV, devno);
        SET_FIELD(b, REQ, ADDR, addr);
        SET_FIELD(b, REQ, WRITE, write);
        SET_FIELD(b, REQ, COUNT, count);
        SET_FIELD(b, REQ, DATA, data[i]);
        SET_FIELD(b, REQ, BE, be[i]);
    }
    s->nbeats = nbeats;
    s->ncpl = write ? 1 : count + 1;
    s->gi = s->gj = 0;
    s->status = 0;
    s->waited = 0;
    s->timeout = timeout;
    s->gs = G_PUT;
    s->dst = nullptr;
    s->pub.start = s->pub.cycle;
}

//! Let the guest idle for `cycles` cycles (run by vm_run).
void vm_idle(void* h, uint64_t cycles) {
    Sim* s = (Sim*)h;
    s->idle_left = cycles;
    s->gs = cycles ? G_WAIT : G_DONE;
}

//! Reset the function (run by vm_run): `cycles` clock edges with rst high (1: a PCI function
//! reset's; the fuzzer holds it for 2, as its Amaranth top's rst_fn).
void vm_reset(void* h, uint64_t cycles) {
    Sim* s = (Sim*)h;
    s->reset_left = cycles ? cycles : 1;
    s->gs = G_RESET;
}

//! Device `i`'s core's host_base register (the bus address of the open object, from OPEN's
//! answer): the fuzzer checks it against its model, as on Amaranth.
uint64_t vm_host_base(void* h, int i) {
    uint64_t bases[VMSHM_DEVICES];
    VMSHM_HOST_BASES(((Sim*)h)->top, bases);
    return bases[i];
}

//! Run cycles until the guest's burst completes (ST_DONE) or Python must act; `which` says
//! which device (ST_CTL, ST_DMA) or device * 4 + channel (ST_DRAWS).
int vm_run(void* h, int* which) {
    Sim* s = (Sim*)h;
    for (;;) {
        // The host model answers at the drive point its request completed, before the guest
        // goes on (as HostBFM does, in zero simulated time).
        for (int i = 0; i < VMSHM_DEVICES; i++) {
            Device& d = s->dev[i];
            if (d.cs == C_PENDING) {
                *which = i;
                return ST_CTL;
            }
            if (d.ds == D_PENDING) {
                *which = i;
                return ST_DMA;
            }
            if (d.db_pending) {
                *which = i;
                return ST_DB;
            }
            if (d.irqs_told < d.irqs.size()) {
                *which = i;
                return ST_IRQ;
            }
        }
        if (s->gs == G_DONE) {
            s->gs = G_IDLE;
            s->pub.data = s->gj ? s->out[0] : 0;
            if (s->dst) {
                for (int k = 0; k < s->gj; k++) memcpy(s->dst + k * WB, &s->out[k], WB);
                s->dst = nullptr;
            }
            s->pub.status = (uint64_t)s->status;
            return ST_DONE;
        }
        if (s->timeout && s->waited >= s->timeout && (s->gs == G_PUT || s->gs == G_GET)) {
            s->gs = G_IDLE;
            s->dst = nullptr;  // Python's buffer is not waited on any more
            return ST_TIMEOUT;
        }
        for (int i = 0; i < VMSHM_DEVICES; i++) {
            Device& d = s->dev[i];
            for (int c = 0; c < CHANNELS; c++) {
                if (d.draws[c].empty()) {
                    *which = i * CHANNELS + c;
                    return ST_DRAWS;
                }
            }
        }
        if (s->gs == G_RESET) {
            // Edges with the function reset high; the host processes run on through them, and
            // the cycle number goes on while rst holds the top's counter at 0.
            s->offset = s->pub.cycle + 1;
            s->top->rst = 1;
            cycle(s);
            s->top->rst = 0;
            if (--s->reset_left == 0) s->gs = G_DONE;
            continue;
        }
        cycle(s);
    }
}

//! Submit a burst and run it (vm_submit, then vm_run): one call from Python instead of two.
int vm_go(void* h, int space, int devno, uint64_t addr, int write, int count, int nbeats,
          const uint64_t* data, const uint32_t* be, uint64_t timeout, int* which) {
    vm_submit(h, space, devno, addr, write, count, nbeats, data, be, timeout);
    return vm_run(h, which);
}

//! Submit a burst of `count` + 1 words given as bytes and run it, as vm_go: a write takes its
//! beats from `src` (every byte enabled but those `first_be` and `last_be` leave out of the
//! first and last word, as GuestBus._write forms them), a read (`src` null) asks with
//! `first_be` and leaves its data in `dst` as bytes when it completes. So a long access costs
//! Python one call a burst and no conversion a word.
int vm_go_bytes(void* h, int space, int devno, uint64_t addr, int count, const uint8_t* src,
                uint8_t* dst, uint32_t first_be, uint32_t last_be, uint64_t timeout,
                int* which) {
    Sim* s = (Sim*)h;
    uint64_t data[VMSHM_MAX_BURST];
    uint32_t be[VMSHM_MAX_BURST];
    int nbeats = src ? count + 1 : 1;
    uint32_t full = (uint32_t)((1ull << WB) - 1);
    for (int i = 0; i < nbeats; i++) {
        data[i] = 0;
        if (src) memcpy(&data[i], src + i * WB, WB);
        be[i] = full & (i == 0 ? first_be : full) & (i == nbeats - 1 && src ? last_be : full);
    }
    vm_submit(h, space, devno, addr, src != nullptr, count, nbeats, data, be, timeout);
    s->dst = dst;
    return vm_run(h, which);
}

//! Submit the one-beat burst in the Shared block and run it: as vm_go, without arguments.
int vm_word(void* h, int* which) {
    Shared& p = ((Sim*)h)->pub;
    uint64_t data = p.wdata;
    uint32_t be = (uint32_t)p.be;
    vm_submit(h, (int)p.space, (int)p.dev, p.addr, (int)p.write, 0, 1, &data, &be, p.timeout);
    return vm_run(h, which);
}

//! The completed burst: its data words into `out`, its worst status; return the word count.
int vm_result(void* h, uint64_t* out, int* status) {
    Sim* s = (Sim*)h;
    memcpy(out, s->out, sizeof(uint64_t) * s->gj);
    *status = s->status;
    return s->gj;
}

//! Device `i`'s pending control request: its name bytes and length; return its op (RESET for a
//! packet holding a RESET beat: answer it with vm_ctl_drop).
int vm_ctl_request(void* h, int i, uint8_t* name, int* len) {
    Device& d = ((Sim*)h)->dev[i];
    int n = (int)d.name.size() < *len ? (int)d.name.size() : *len;
    memcpy(name, d.name.data(), n);
    *len = (int)d.name.size();
    return d.creset ? OP_RESET : d.cop;
}

//! Device `i`'s pending control request gets no answer (a RESET): take the next one.
void vm_ctl_drop(void* h, int i) { ctl_next(((Sim*)h)->dev[i]); }

//! Answer device `i`'s pending control request (echoing its op and tag) after `latency` cycles.
void vm_ctl_answer(void* h, int i, int status, uint64_t size, uint64_t addr, uint32_t latency) {
    Device& d = ((Sim*)h)->dev[i];
    d.crsp.clear();
    SET_FIELD(d.crsp, CTL_RSP, STATUS, status);
    SET_FIELD(d.crsp, CTL_RSP, SIZE, size);
    SET_FIELD(d.crsp, CTL_RSP, ADDR, addr);
    SET_FIELD(d.crsp, CTL_RSP, OP, d.cop);
    SET_FIELD(d.crsp, CTL_RSP, TAG, d.ctag);
    uint64_t wait = latency + (d.cfaults >> F_LATE & 1 ? d.clate : 0);
    if (wait) {
        d.cwait = wait;
        d.cs = C_WAIT;
    } else {
        ctl_waited(d);
    }
}

//! Device `i`'s host faults: `n` rows of (channel, kind, exchange, beat, cycles), FaultKind
//! order; a stall for ever has a cycle count past any run.
void vm_set_faults(void* h, int i, int n, const uint64_t* rows) {
    Device& d = ((Sim*)h)->dev[i];
    d.faults.clear();
    for (int k = 0; k < n; k++) {
        const uint64_t* r = rows + 5 * k;
        d.faults.push_back(Fault{r[0], r[1], r[2], r[3], r[4]});
    }
}

//! Device `i`'s pending DMA request; return whether it is a write.
int vm_dma_request(void* h, int i, uint64_t* addr, int* words, uint64_t* data, uint32_t* be) {
    Device& d = ((Sim*)h)->dev[i];
    *addr = d.daddr;
    *words = d.dwords;
    if (d.dwrite) {
        memcpy(data, d.ddata, sizeof(uint64_t) * d.dwords);
        memcpy(be, d.dbe, sizeof(uint32_t) * d.dwords);
    }
    return d.dwrite;
}

void vm_dma_answer(void* h, int i, int ok, const uint64_t* data, uint32_t latency) {
    Device& d = ((Sim*)h)->dev[i];
    d.dok = ok;
    if (!d.dwrite) memcpy(d.ddata, data, sizeof(uint64_t) * d.dwords);
    dma_answered(d, latency);
}

//! Copy up to `max` of device `i`'s host events; return how many there are.
int vm_events(void* h, int i, uint64_t* cycles, uint8_t* kinds, uint8_t* ops, int max) {
    Device& d = ((Sim*)h)->dev[i];
    int n = (int)d.events.size();
    for (int k = 0; k < n && k < max; k++) {
        cycles[k] = d.events[k].cycle;
        kinds[k] = d.events[k].kind;
        ops[k] = d.events[k].op;
    }
    return n;
}

//! Stall device `i`'s doorbell process `cycles` cycles before it takes doorbell `exchange`
//! (HostFaults' "db" stall); exchange 0's applies from now.
void vm_db_stall(void* h, int i, uint64_t exchange, uint64_t cycles) {
    Device& d = ((Sim*)h)->dev[i];
    d.db_stalls.emplace_back(exchange, cycles);
    if (exchange == d.db_exchange) d.db_wait = cycles;
}

//! Device `i`'s doorbell taken (ST_DB): its peer and vector; the process takes the next.
void vm_db_take(void* h, int i, uint32_t* peer, uint32_t* vector) {
    Device& d = ((Sim*)h)->dev[i];
    *peer = d.db_peer;
    *vector = d.db_vector;
    d.db_pending = false;
}

//! Queue a ring of `vector` on device `i`'s ring port, delivered one a cycle from the next run.
void vm_ring(void* h, int i, int vector) { ((Sim*)h)->dev[i].rings.push_back((uint16_t)vector); }

//! Drive device `i`'s peer_valid and peer_id.
void vm_set_peer(void* h, int i, int valid, int id) {
    Device& d = ((Sim*)h)->dev[i];
    *d.peer_valid = (uint8_t)valid;
    *d.peer_id = (uint16_t)id;
}

//! Return device `i`'s INTx level now.
int vm_intx(void* h, int i) { return *((Sim*)h)->dev[i].intx; }

//! Copy device `i`'s interrupts not copied before (ST_IRQ), up to `max`; return how many.
int vm_irqs(void* h, int i, uint64_t* cycles, uint8_t* kinds, uint64_t* addrs, uint32_t* datas,
            int max) {
    Device& d = ((Sim*)h)->dev[i];
    int n = 0;
    while (d.irqs_told < d.irqs.size() && n < max) {
        const Irq& q = d.irqs[d.irqs_told++];
        cycles[n] = q.cycle;
        kinds[n] = q.kind;
        addrs[n] = q.addr;
        datas[n] = q.data;
        n++;
    }
    return n;
}

}  // extern "C"

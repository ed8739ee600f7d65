//! The flat IPv4 FIB's shadow: per table a prefix set, expanded (controlled prefix expansion,
//! 16-8-8) into the levels the programs read, and the writes that take the maps from one
//! expansion to the next. One job: prefixes in, ordered writes out; [`crate::maps::Maps`]
//! applies them, the writer and the bench call [`Flat4::set`] where they write `FIB4`.
//!
//! Every table's routes stay in `FIB4` too (the trie is complete for every table): a table
//! the flat pools cannot hold, or not yet, is served by the trie, and readers (vrfctl, verify,
//! restart adoption) keep reading the trie.
//!
//! Concurrent readers see old or new, never a mix that forwards wrongly:
//! - every entry is one aligned u32, stored atomically;
//! - [`Flat4Writes`] is applied in phases — directory ways cleared, route values, chunks no
//!   entry names yet, entries of live chunks, first levels, directory ways set — so nothing is
//!   named before it is complete;
//! - a freed chunk, slot or value id is reused only after [`QUARANTINE`]: a program holds an
//!   index only during one run (µs, under RCU with bottom halves off), so a packet never reads
//!   a reused chunk.
use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use vrf_common::{
    flat4_bucket, Flat4Bucket, Flat4Way, Route, FLAT4_CHUNK, FLAT4_CHUNK_ENTRIES,
    FLAT4_DIR_BUCKETS, FLAT4_L1_ENTRIES, FLAT4_VALUES,
};

/// How long a freed chunk, slot or value id waits before reuse: far beyond one program run
/// (bounded by its instructions, a few µs), even with interrupts in between.
pub const QUARANTINE: Duration = Duration::from_secs(1);

const CHUNK: usize = FLAT4_CHUNK_ENTRIES as usize;
const L1: usize = FLAT4_L1_ENTRIES as usize;

/// The writes for one step, in the order [`crate::maps::Maps::apply_flat4`] applies them.
#[derive(Debug, Default)]
pub struct Flat4Writes {
    /// Directory buckets losing a way (first: their slots stop being read).
    pub dir_clear: Vec<(u32, Flat4Bucket)>,
    /// Route values by id (ids not named by any entry yet, or unchanged).
    pub routes: Vec<(u32, Route)>,
    /// Chunk-pool entries (global index), chunks no entry names yet first, then live ones.
    pub new_chunks: Vec<(u32, u32)>,
    pub live_chunks: Vec<(u32, u32)>,
    /// First-level entries (global index: slot × 2^16 + top 16 bits).
    pub l1: Vec<(u32, u32)>,
    /// Directory buckets gaining a way (last: their slot is complete).
    pub dir_set: Vec<(u32, Flat4Bucket)>,
}

impl Flat4Writes {
    pub fn is_empty(&self) -> bool {
        self.dir_clear.is_empty()
            && self.routes.is_empty()
            && self.new_chunks.is_empty()
            && self.live_chunks.is_empty()
            && self.l1.is_empty()
            && self.dir_set.is_empty()
    }
}

/// Sizes of the pools, from the maps as loaded.
#[derive(Clone, Copy, Debug)]
pub struct Flat4Sizes {
    pub slots: u32,
    pub chunks: u32,
    pub values: u32,
}

impl Default for Flat4Sizes {
    fn default() -> Self {
        Flat4Sizes {
            slots: vrf_common::FLAT4_SLOTS,
            chunks: vrf_common::FLAT4_CHUNKS,
            values: FLAT4_VALUES,
        }
    }
}

/// Ids 0..n with reuse after quarantine.
struct Pool {
    free: Vec<u32>,
    quarantine: VecDeque<(Instant, u32)>,
    /// Freed during the current step: they enter quarantine when its writes are applied.
    pending: Vec<u32>,
}

impl Pool {
    fn new(ids: std::ops::Range<u32>) -> Self {
        Pool {
            free: ids.rev().collect(),
            quarantine: VecDeque::new(),
            pending: Vec::new(),
        }
    }
    /// Returns whether anything became free.
    fn release_expired(&mut self, now: Instant) -> bool {
        let before = self.free.len();
        while let Some((t, _)) = self.quarantine.front() {
            if now.duration_since(*t) < QUARANTINE {
                break;
            }
            let (_, id) = self.quarantine.pop_front().expect("front exists");
            self.free.push(id);
        }
        self.free.len() > before
    }
    fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }
    fn available(&self) -> usize {
        self.free.len()
    }
    fn free(&mut self, id: u32) {
        self.pending.push(id);
    }
    /// The step's writes are in the maps: what it freed starts waiting.
    fn commit(&mut self, now: Instant) {
        for id in self.pending.drain(..) {
            self.quarantine.push_back((now, id));
        }
    }
    /// Everything in use by an unknown writer (a previous vrfd) waits out the quarantine.
    fn quarantine_all(&mut self, now: Instant) {
        for id in self.free.drain(..) {
            self.quarantine.push_back((now, id));
        }
    }
}

/// A chunk's shadow: the raw entries as written and, for leaves, the length of the prefix
/// that set them (0 for an empty entry).
struct Chunk {
    raw: [u32; CHUNK],
    len: [u8; CHUNK],
}

/// A table's first level, as written.
struct Level1 {
    slot: u32,
    raw: Vec<u32>,
    len: Vec<u8>,
}

#[derive(Default)]
struct Table {
    /// Per prefix length: network address (host order) → route.
    prefixes: Vec<HashMap<u32, Route>>,
    count: usize,
    /// Present while the table has a flat slot.
    flat: Option<Level1>,
    /// Chunks this table would need and the pool could not give at the last try: tried again
    /// only once that many are free (no work proportional to the table per event).
    wanted: Option<usize>,
}

/// What a leaf update does to an entry set by a prefix of length `len_e`.
#[derive(Clone, Copy)]
enum Rule {
    /// A prefix of length `len` now has value `id`: entries set by it or by shorter ones.
    Set { id: u32, len: u8 },
    /// The prefix of length `len` is gone: its entries fall back to its cover.
    Unset { len: u8, cover: u32, cover_len: u8 },
}

impl Rule {
    fn apply(self, raw: u32, len_e: u8) -> Option<(u32, u8)> {
        match self {
            Rule::Set { id, len } if len_e <= len && (raw != id || len_e != len) => Some((id, len)),
            Rule::Unset {
                len,
                cover,
                cover_len,
            } if len_e == len && raw & FLAT4_CHUNK == 0 && (raw, len_e) != (cover, cover_len) => {
                Some((cover, cover_len))
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Full;

pub struct Flat4 {
    tables: HashMap<u32, Table>,
    dir: Vec<Flat4Bucket>,
    chunks: Vec<Option<Box<Chunk>>>,
    slots: Pool,
    chunk_ids: Pool,
    value_ids: Pool,
    /// Route value (as bytes) → (id, prefixes of flat tables naming it).
    values: HashMap<u64, (u32, u32)>,
    /// Value id → route value.
    ids: HashMap<u32, Route>,
    dirty_l1: BTreeSet<u32>,
    dirty_chunks: BTreeSet<u32>,
    new_chunks: BTreeSet<u32>,
    new_values: BTreeSet<u32>,
    dir_clear: BTreeSet<u32>,
    dir_set: BTreeSet<u32>,
    /// Tables changed since the last flush: only they are looked at (a flush per route stays
    /// cheap with hundreds of tables).
    touched: BTreeSet<u32>,
    /// Tables waiting for pool space, tried again when some was freed.
    blocked: BTreeSet<u32>,
    /// Flat slot → its table.
    slot_tables: HashMap<u32, u32>,
}

fn value_key(r: &Route) -> u64 {
    u64::from_ne_bytes(bytemuck::cast(*r))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl Flat4 {
    pub fn new(sizes: Flat4Sizes) -> Self {
        Flat4 {
            tables: HashMap::new(),
            dir: vec![Flat4Bucket::default(); FLAT4_DIR_BUCKETS as usize],
            chunks: (0..sizes.chunks).map(|_| None).collect(),
            slots: Pool::new(0..sizes.slots),
            chunk_ids: Pool::new(0..sizes.chunks),
            // Value id 0 is "no route".
            value_ids: Pool::new(1..sizes.values.min(FLAT4_VALUES)),
            values: HashMap::new(),
            ids: HashMap::new(),
            dirty_l1: BTreeSet::new(),
            dirty_chunks: BTreeSet::new(),
            new_chunks: BTreeSet::new(),
            new_values: BTreeSet::new(),
            dir_clear: BTreeSet::new(),
            dir_set: BTreeSet::new(),
            touched: BTreeSet::new(),
            blocked: BTreeSet::new(),
            slot_tables: HashMap::new(),
        }
    }

    /// For maps a previous writer filled: the directory is emptied (every table falls back to
    /// the trie, which it kept complete) and every id waits out the quarantine before reuse.
    pub fn adopt(sizes: Flat4Sizes, now: Instant) -> (Self, Flat4Writes) {
        let mut f = Flat4::new(sizes);
        f.slots.quarantine_all(now);
        f.chunk_ids.quarantine_all(now);
        f.value_ids.quarantine_all(now);
        let writes = Flat4Writes {
            dir_clear: (0..FLAT4_DIR_BUCKETS)
                .map(|b| (b, Flat4Bucket::default()))
                .collect(),
            ..Default::default()
        };
        (f, writes)
    }

    /// Set (`Some`) or remove (`None`) the route for `net` in `table`. The maps change at
    /// the next [`flush`](Self::flush).
    pub fn set(&mut self, table: u32, net: Ipv4Net, route: Option<Route>) {
        let net = net.trunc();
        let len = net.prefix_len();
        let addr = u32::from(net.network());
        self.touched.insert(table);
        let t = self.tables.entry(table).or_default();
        if t.prefixes.is_empty() {
            t.prefixes = (0..=32).map(|_| HashMap::new()).collect();
        }
        let old = match route {
            Some(r) => t.prefixes[len as usize].insert(addr, r),
            None => t.prefixes[len as usize].remove(&addr),
        };
        match (old.is_some(), route.is_some()) {
            (false, true) => t.count += 1,
            (true, false) => t.count -= 1,
            _ => {}
        }
        if old == route || t.flat.is_none() {
            return;
        }
        let res = match route {
            Some(r) => self.intern(r).and_then(|id| {
                self.paint(table, addr, len, Rule::Set { id, len })
                    .inspect_err(|_| self.release(&r))
            }),
            None => {
                let (cover, cover_len) = self.cover(table, addr, len);
                self.paint(
                    table,
                    addr,
                    len,
                    Rule::Unset {
                        len,
                        cover,
                        cover_len,
                    },
                )
            }
        };
        match res {
            Ok(()) => {
                if let Some(o) = old {
                    self.release(&o);
                }
            }
            Err(Full) => {
                tracing::warn!(
                    table,
                    "the flat IPv4 pools are full: this table is served by the LPM trie"
                );
                // The old value's reference is still held, the new one's was never taken.
                if let Some(o) = old {
                    self.release(&o);
                }
                self.evict(table, route.map(|_| (len, addr)));
            }
        }
    }

    /// Tables served by a flat slot now.
    pub fn flat_tables(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .tables
            .iter()
            .filter_map(|(t, s)| s.flat.as_ref().map(|f| (*t, f.slot)))
            .collect();
        v.sort();
        v
    }

    /// Chunks in use (1 KiB each in the kernel).
    pub fn chunks_used(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }

    /// Give slots to the tables that have none and fit, release those of empty tables, and
    /// return every write since the last flush, in order. `now` stamps what this step freed.
    pub fn flush(&mut self, now: Instant) -> Flat4Writes {
        let freed = self.slots.release_expired(now)
            | self.chunk_ids.release_expired(now)
            | self.value_ids.release_expired(now);
        let mut look = std::mem::take(&mut self.touched);
        if freed {
            look.append(&mut self.blocked);
        }
        for table in look {
            let Some(t) = self.tables.get(&table) else {
                continue;
            };
            if t.count == 0 {
                self.evict(table, None);
                self.tables.remove(&table);
                self.blocked.remove(&table);
            } else if table != 0 && t.flat.is_none() {
                if t.wanted.is_none_or(|w| w <= self.chunk_ids.available()) {
                    self.build(table);
                }
                if self.tables[&table].flat.is_none() {
                    self.blocked.insert(table);
                }
            }
        }
        let mut w = Flat4Writes::default();
        for b in std::mem::take(&mut self.dir_clear) {
            w.dir_clear.push((b, self.dir[b as usize]));
        }
        for id in std::mem::take(&mut self.new_values) {
            if let Some(r) = self.route_of(id) {
                w.routes.push((id, r));
            }
        }
        let new = std::mem::take(&mut self.new_chunks);
        for c in &new {
            if let Some(ch) = &self.chunks[*c as usize] {
                let base = c * FLAT4_CHUNK_ENTRIES;
                w.new_chunks.extend(
                    ch.raw
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (base + i as u32, *v)),
                );
            }
        }
        for i in std::mem::take(&mut self.dirty_chunks) {
            let c = i / FLAT4_CHUNK_ENTRIES;
            if new.contains(&c) {
                continue;
            }
            if let Some(ch) = &self.chunks[c as usize] {
                w.live_chunks
                    .push((i, ch.raw[(i % FLAT4_CHUNK_ENTRIES) as usize]));
            }
        }
        for i in std::mem::take(&mut self.dirty_l1) {
            let f = self
                .slot_tables
                .get(&(i / FLAT4_L1_ENTRIES))
                .and_then(|t| self.tables.get(t))
                .and_then(|t| t.flat.as_ref());
            if let Some(f) = f {
                w.l1.push((i, f.raw[(i % FLAT4_L1_ENTRIES) as usize]));
            }
        }
        for b in std::mem::take(&mut self.dir_set) {
            w.dir_set.push((b, self.dir[b as usize]));
        }
        self.slots.commit(now);
        self.chunk_ids.commit(now);
        self.value_ids.commit(now);
        w
    }

    /// The route a table's flat expansion gives `addr` (for tests and inspection).
    pub fn lookup(&self, table: u32, addr: u32) -> Option<Route> {
        let t = self.tables.get(&table)?;
        let f = t.flat.as_ref()?;
        let mut e = f.raw[(addr >> 16) as usize];
        if e & FLAT4_CHUNK != 0 {
            e = self.chunks[(e & !FLAT4_CHUNK) as usize].as_ref()?.raw
                [((addr >> 8) & 0xff) as usize];
            if e & FLAT4_CHUNK != 0 {
                e = self.chunks[(e & !FLAT4_CHUNK) as usize].as_ref()?.raw[(addr & 0xff) as usize];
            }
        }
        self.route_of(e)
    }

    fn route_of(&self, id: u32) -> Option<Route> {
        self.ids.get(&id).copied()
    }

    fn intern(&mut self, r: Route) -> Result<u32, Full> {
        let key = value_key(&r);
        if let Some((id, refs)) = self.values.get_mut(&key) {
            *refs += 1;
            return Ok(*id);
        }
        let id = self.value_ids.alloc().ok_or(Full)?;
        self.values.insert(key, (id, 1));
        self.ids.insert(id, r);
        self.new_values.insert(id);
        Ok(id)
    }

    fn release(&mut self, r: &Route) {
        let key = value_key(r);
        if let Some((id, refs)) = self.values.get_mut(&key) {
            *refs -= 1;
            if *refs == 0 {
                let id = *id;
                self.values.remove(&key);
                self.ids.remove(&id);
                self.new_values.remove(&id);
                self.value_ids.free(id);
            }
        }
    }

    fn id_of(&self, r: &Route) -> u32 {
        self.values.get(&value_key(r)).map_or(0, |(id, _)| *id)
    }

    /// The longest prefix shorter than `len` covering `addr`: its value id and length.
    fn cover(&self, table: u32, addr: u32, len: u8) -> (u32, u8) {
        let t = &self.tables[&table];
        for l in (0..len).rev() {
            if let Some(r) = t.prefixes[l as usize].get(&(addr & mask(l))) {
                return (self.id_of(r), l);
            }
        }
        (0, 0)
    }

    fn alloc_chunk(&mut self, fill: u32, len: u8) -> Result<u32, Full> {
        let c = self.chunk_ids.alloc().ok_or(Full)?;
        self.chunks[c as usize] = Some(Box::new(Chunk {
            raw: [fill; CHUNK],
            len: [len; CHUNK],
        }));
        self.new_chunks.insert(c);
        Ok(c)
    }

    fn free_chunk(&mut self, c: u32) {
        self.chunks[c as usize] = None;
        self.new_chunks.remove(&c);
        self.chunk_ids.free(c);
    }

    /// Apply `rule` to the range of `addr/len`, making chunks where the prefix is longer than
    /// a level, collapsing those a removal leaves uniform.
    fn paint(&mut self, table: u32, addr: u32, len: u8, rule: Rule) -> Result<(), Full> {
        let slot = self.tables[&table].flat.as_ref().expect("flat").slot;
        let i1 = addr >> 16;
        if len <= 16 {
            let n = 1u32 << (16 - len);
            for i in i1..i1 + n {
                self.update_l1(table, slot, i, rule);
            }
            return Ok(());
        }
        let c2 = self.chunk_of_l1(table, slot, i1)?;
        let j = (addr >> 8) & 0xff;
        if len <= 24 {
            let n = 1u32 << (24 - len);
            for k in j..j + n {
                self.update_chunk(c2, k, rule);
            }
        } else {
            let c3 = self.chunk_of_chunk(c2, j)?;
            let n = 1u32 << (32 - len);
            let k0 = addr & 0xff;
            for k in k0..k0 + n {
                self.update_chunk(c3, k, rule);
            }
            self.collapse_in_chunk(c2, j, 24);
        }
        self.collapse_in_l1(table, slot, i1);
        Ok(())
    }

    fn update_l1(&mut self, table: u32, slot: u32, i: u32, rule: Rule) {
        let f = self.tables[&table].flat.as_ref().expect("flat");
        let (raw, len_e) = (f.raw[i as usize], f.len[i as usize]);
        if raw & FLAT4_CHUNK != 0 {
            let c = raw & !FLAT4_CHUNK;
            for k in 0..FLAT4_CHUNK_ENTRIES {
                self.update_chunk(c, k, rule);
            }
            self.collapse_in_l1(table, slot, i);
        } else if let Some((v, l)) = rule.apply(raw, len_e) {
            self.set_l1(table, slot, i, v, l);
        }
    }

    fn update_chunk(&mut self, c: u32, k: u32, rule: Rule) {
        let ch = self.chunks[c as usize].as_ref().expect("live chunk");
        let (raw, len_e) = (ch.raw[k as usize], ch.len[k as usize]);
        if raw & FLAT4_CHUNK != 0 {
            let c3 = raw & !FLAT4_CHUNK;
            for m in 0..FLAT4_CHUNK_ENTRIES {
                self.update_chunk(c3, m, rule);
            }
            self.collapse_in_chunk(c, k, 24);
        } else if let Some((v, l)) = rule.apply(raw, len_e) {
            let ch = self.chunks[c as usize].as_mut().expect("live chunk");
            ch.raw[k as usize] = v;
            ch.len[k as usize] = l;
            self.dirty_chunks.insert(c * FLAT4_CHUNK_ENTRIES + k);
        }
    }

    /// Write first-level entry `i` of `table` (flat slot `slot`) and mark it for the next flush.
    fn set_l1(&mut self, table: u32, slot: u32, i: u32, raw: u32, len: u8) {
        let f = self
            .tables
            .get_mut(&table)
            .and_then(|t| t.flat.as_mut())
            .expect("flat");
        f.raw[i as usize] = raw;
        f.len[i as usize] = len;
        self.dirty_l1.insert(slot * FLAT4_L1_ENTRIES + i);
    }

    /// The chunk under first-level entry `i`, made from its leaf if it is one.
    fn chunk_of_l1(&mut self, table: u32, slot: u32, i: u32) -> Result<u32, Full> {
        let f = self.tables[&table].flat.as_ref().expect("flat");
        let (raw, len_e) = (f.raw[i as usize], f.len[i as usize]);
        if raw & FLAT4_CHUNK != 0 {
            return Ok(raw & !FLAT4_CHUNK);
        }
        let c = self.alloc_chunk(raw, len_e)?;
        self.set_l1(table, slot, i, FLAT4_CHUNK | c, 0);
        Ok(c)
    }

    fn chunk_of_chunk(&mut self, c2: u32, j: u32) -> Result<u32, Full> {
        let ch = self.chunks[c2 as usize].as_ref().expect("live chunk");
        let (raw, len_e) = (ch.raw[j as usize], ch.len[j as usize]);
        if raw & FLAT4_CHUNK != 0 {
            return Ok(raw & !FLAT4_CHUNK);
        }
        let c = self.alloc_chunk(raw, len_e)?;
        let ch = self.chunks[c2 as usize].as_mut().expect("live chunk");
        ch.raw[j as usize] = FLAT4_CHUNK | c;
        ch.len[j as usize] = 0;
        self.dirty_chunks.insert(c2 * FLAT4_CHUNK_ENTRIES + j);
        Ok(c)
    }

    /// A chunk whose entries all come from prefixes no longer than its level (`base` bits)
    /// holds one leaf 256 times: the parent takes the leaf, the chunk is freed.
    fn uniform(&self, c: u32, base: u8) -> Option<(u32, u8)> {
        let ch = self.chunks[c as usize].as_ref()?;
        let (r0, l0) = (ch.raw[0], ch.len[0]);
        let all = ch
            .raw
            .iter()
            .zip(ch.len.iter())
            .all(|(r, l)| *r & FLAT4_CHUNK == 0 && *l <= base && *r == r0 && *l == l0);
        all.then_some((r0, l0))
    }

    fn collapse_in_l1(&mut self, table: u32, slot: u32, i: u32) {
        let f = self.tables[&table].flat.as_ref().expect("flat");
        let raw = f.raw[i as usize];
        if raw & FLAT4_CHUNK == 0 {
            return;
        }
        let c = raw & !FLAT4_CHUNK;
        if let Some((v, l)) = self.uniform(c, 16) {
            self.set_l1(table, slot, i, v, l);
            self.free_chunk(c);
        }
    }

    fn collapse_in_chunk(&mut self, c2: u32, j: u32, base: u8) {
        let Some(ch) = self.chunks[c2 as usize].as_ref() else {
            return;
        };
        let raw = ch.raw[j as usize];
        if raw & FLAT4_CHUNK == 0 {
            return;
        }
        let c = raw & !FLAT4_CHUNK;
        if let Some((v, l)) = self.uniform(c, base) {
            let ch = self.chunks[c2 as usize].as_mut().expect("live chunk");
            ch.raw[j as usize] = v;
            ch.len[j as usize] = l;
            self.dirty_chunks.insert(c2 * FLAT4_CHUNK_ENTRIES + j);
            self.free_chunk(c);
        }
    }

    /// Chunks a table's expansion needs: one per /16 holding a longer prefix, one per /24
    /// holding a longer prefix.
    fn chunks_needed(t: &Table) -> usize {
        let mut l2 = BTreeSet::new();
        let mut l3 = BTreeSet::new();
        for (len, set) in t.prefixes.iter().enumerate() {
            for a in set.keys() {
                if len > 16 {
                    l2.insert(a >> 16);
                }
                if len > 24 {
                    l3.insert(a >> 8);
                }
            }
        }
        l2.len() + l3.len()
    }

    /// Expand a whole table into a free slot (shortest prefixes first, so chunks are made
    /// once, from their final cover) and name it in the directory last.
    fn build(&mut self, table: u32) {
        let t = &self.tables[&table];
        let needed = Self::chunks_needed(t);
        let distinct: BTreeSet<u64> = t
            .prefixes
            .iter()
            .flat_map(|s| s.values().map(value_key))
            .filter(|k| !self.values.contains_key(k))
            .collect();
        if needed > self.chunk_ids.available() || distinct.len() > self.value_ids.available() {
            self.tables.get_mut(&table).expect("table").wanted = Some(needed);
            return;
        }
        let b = flat4_bucket(table) as usize;
        let Some(way) = self.dir[b]
            .ways
            .iter()
            .position(|w| *w == Flat4Way::default())
        else {
            // Each way is taken by another table: this one stays in the trie.
            self.tables.get_mut(&table).expect("table").wanted = Some(usize::MAX);
            return;
        };
        let Some(slot) = self.slots.alloc() else {
            self.tables.get_mut(&table).expect("table").wanted = Some(needed);
            return;
        };
        let mut all: Vec<(u8, u32, Route)> = t
            .prefixes
            .iter()
            .enumerate()
            .flat_map(|(len, s)| s.iter().map(move |(a, r)| (len as u8, *a, *r)))
            .collect();
        all.sort_by_key(|(len, a, _)| (*len, *a));
        let t = self.tables.get_mut(&table).expect("table");
        t.wanted = None;
        self.slot_tables.insert(slot, table);
        t.flat = Some(Level1 {
            slot,
            raw: vec![0; L1],
            len: vec![0; L1],
        });
        let mut unpainted = None;
        for (len, addr, r) in all {
            let painted = self.intern(r).and_then(|id| {
                self.paint(table, addr, len, Rule::Set { id, len })
                    .inspect_err(|_| self.release(&r))
            });
            if painted.is_err() {
                unpainted = Some((len, addr));
                break;
            }
        }
        if let Some((len, addr)) = unpainted {
            // Counted above, so only a bug gets here: the trie serves the table. Prefixes
            // after the failed one hold no reference: take one each, evict releases all.
            tracing::error!(table, "flat IPv4 build ran out of pool space");
            let later: Vec<Route> = self.tables[&table]
                .prefixes
                .iter()
                .enumerate()
                .flat_map(|(l, s)| {
                    s.iter()
                        .filter(move |(a, _)| (l as u8, **a) > (len, addr))
                        .map(|(_, r)| *r)
                })
                .collect();
            for r in later {
                let key = value_key(&r);
                // Not interned: evict's release of it is a no-op.
                if let Some((_, refs)) = self.values.get_mut(&key) {
                    *refs += 1;
                }
            }
            self.evict(table, Some((len, addr)));
            return;
        }
        self.dirty_l1
            .extend(slot * FLAT4_L1_ENTRIES..(slot + 1) * FLAT4_L1_ENTRIES);
        self.dir[b].ways[way] = Flat4Way {
            table,
            slot: slot + 1,
        };
        self.dir_set.insert(b as u32);
    }

    /// Take a table out of the flat FIB (the trie serves it): its directory way is cleared
    /// first, its chunks, slot and values wait out the quarantine. Every prefix holds a value
    /// reference but `unheld`, the one a failed step could not paint.
    fn evict(&mut self, table: u32, unheld: Option<(u8, u32)>) {
        let Some(t) = self.tables.get_mut(&table) else {
            return;
        };
        let Some(f) = t.flat.take() else {
            return;
        };
        t.wanted = Some(Self::chunks_needed(t));
        let routes: Vec<Route> = t
            .prefixes
            .iter()
            .enumerate()
            .flat_map(|(l, s)| {
                s.iter()
                    .filter(move |(a, _)| Some((l as u8, **a)) != unheld)
                    .map(|(_, r)| *r)
            })
            .collect();
        let b = flat4_bucket(table) as usize;
        for w in self.dir[b].ways.iter_mut() {
            if w.table == table {
                *w = Flat4Way::default();
                self.dir_clear.insert(b as u32);
                self.dir_set.remove(&(b as u32));
            }
        }
        let mut stack: Vec<u32> = f
            .raw
            .iter()
            .filter(|r| *r & FLAT4_CHUNK != 0)
            .map(|r| r & !FLAT4_CHUNK)
            .collect();
        while let Some(c) = stack.pop() {
            if let Some(ch) = &self.chunks[c as usize] {
                stack.extend(
                    ch.raw
                        .iter()
                        .filter(|r| *r & FLAT4_CHUNK != 0)
                        .map(|r| r & !FLAT4_CHUNK),
                );
            }
            self.free_chunk(c);
        }
        // Its dirty first-level entries are dropped at flush (no table holds the slot).
        self.slot_tables.remove(&f.slot);
        self.slots.free(f.slot);
        for r in routes {
            self.release(&r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn u32(&mut self) -> u32 {
            (self.next() >> 32) as u32
        }
    }

    fn route(n: u32) -> Route {
        Route {
            kind: 1,
            mtu: 0,
            nexthop: n,
        }
    }

    fn reference(set: &BTreeMap<(u8, u32), Route>, addr: u32) -> Option<Route> {
        (0..=32u8)
            .rev()
            .find_map(|l| set.get(&(l, addr & mask(l))).copied())
    }

    #[test]
    fn random_tables_expand_to_the_longest_match() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Enough slots that the table emptying early on never waits for one.
        let mut f = Flat4::new(Flat4Sizes {
            slots: 64,
            chunks: 4096,
            values: 64,
        });
        let mut set: BTreeMap<(u8, u32), Route> = BTreeMap::new();
        let base = 0x0a00_0000u32;
        // 10 ms a step: freed ids come back after 100 steps.
        let t0 = Instant::now();
        let clock = |step: u64| t0 + Duration::from_millis(10 * step);
        for step in 0..3000 {
            // Every length, the short ones (a /0 rewrites 2^16 entries) less often.
            let len = if rng.below(4) == 0 {
                rng.below(33) as u8
            } else {
                12 + rng.below(21) as u8
            };
            // Addresses clustered in 10.0/14 so prefixes nest.
            let addr = (base | (rng.u32() & 0x0003_ffff)) & mask(len);
            let net = Ipv4Net::new(addr.into(), len).unwrap();
            if rng.below(100) < 35 && !set.is_empty() {
                let k = *set
                    .keys()
                    .nth(rng.below(set.len() as u64) as usize)
                    .unwrap();
                set.remove(&k);
                f.set(5, Ipv4Net::new(k.1.into(), k.0).unwrap(), None);
            } else {
                let r = route(1 + rng.below(19) as u32);
                set.insert((len, addr), r);
                f.set(5, net, Some(r));
            }
            f.flush(clock(step));
            assert_eq!(
                f.flat_tables().len(),
                usize::from(!set.is_empty()),
                "step {step}"
            );
            if step % 97 == 0 {
                for _ in 0..300 {
                    let a = base | (rng.u32() & 0x0003_ffff);
                    assert_eq!(
                        f.lookup(5, a),
                        reference(&set, a),
                        "step {step} addr {a:#x}"
                    );
                }
                for ((len, a), _) in set.iter().take(50) {
                    let last = a | !mask(*len);
                    assert_eq!(f.lookup(5, *a), reference(&set, *a));
                    assert_eq!(f.lookup(5, last), reference(&set, last));
                }
            }
        }
        // Emptied, every chunk is freed.
        for (len, a) in set.keys().copied().collect::<Vec<_>>() {
            f.set(5, Ipv4Net::new(a.into(), len).unwrap(), None);
        }
        f.flush(clock(3000));
        assert_eq!(f.chunks_used(), 0);
        assert!(f.flat_tables().is_empty());
    }

    #[test]
    fn writes_name_nothing_before_it_is_written() {
        let mut f = Flat4::new(Flat4Sizes {
            slots: 1,
            chunks: 16,
            values: 16,
        });
        f.set(9, "10.1.2.0/24".parse().unwrap(), Some(route(1)));
        let w = f.flush(Instant::now());
        assert_eq!(w.dir_set.len(), 1);
        assert_eq!(w.routes.len(), 1);
        assert_eq!(w.new_chunks.len(), 256);
        assert_eq!(w.l1.len(), L1);
        // A /28 inside: one new third-level chunk, one live second-level entry.
        f.set(9, "10.1.2.16/28".parse().unwrap(), Some(route(2)));
        let w = f.flush(Instant::now());
        assert_eq!(w.new_chunks.len(), 256);
        assert_eq!(w.live_chunks.len(), 1);
        assert!(w.l1.is_empty() && w.dir_set.is_empty());
        // A second table does not fit (one slot): the trie serves it.
        f.set(10, "10.0.0.0/8".parse().unwrap(), Some(route(3)));
        f.flush(Instant::now());
        assert_eq!(f.flat_tables(), vec![(9, 0)]);
    }

    #[test]
    fn a_full_chunk_pool_evicts_the_table_to_the_trie() {
        let mut f = Flat4::new(Flat4Sizes {
            slots: 1,
            chunks: 2,
            values: 16,
        });
        f.set(9, "10.1.0.0/16".parse().unwrap(), Some(route(1)));
        f.flush(Instant::now());
        for i in 0..3u32 {
            let net = Ipv4Net::new((0x0a00_0000 | (i << 16)).into(), 24).unwrap();
            f.set(9, net, Some(route(2)));
        }
        let w = f.flush(Instant::now());
        assert!(f.flat_tables().is_empty());
        assert_eq!(w.dir_clear.len(), 1);
        assert_eq!(w.dir_clear[0].1, Flat4Bucket::default());
    }
}

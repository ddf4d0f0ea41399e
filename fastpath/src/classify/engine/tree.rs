//! Partitioned bit-cutting trees over `D` 32-bit dimensions (see the module doc of `engine`).
//!
//! Layout: one [`Forest`] per address family holds every tree's [`Slot`]s in one arena and every
//! leaf's [`Block`]s in another; a tree is a root slot index, its depth and its best rule.

use super::{BATCH, BuildError, BuildOptions};
use std::collections::HashMap;

/// "No rule matched" (rule indexes are below `u32::MAX`).
pub(crate) const NO_RULE: u32 = u32::MAX;
/// Boxes per leaf block.
pub(crate) const LANES: usize = 8;
/// Boxes per half block: leaves of at most this many boxes use one (half the cache lines and
/// compares of a full block).
pub(crate) const HALF: usize = 4;

/// `Slot::base` of an empty leaf.
const EMPTY: u32 = u32::MAX;
/// `Slot::dim` of a leaf stored as one half block.
const HALF_LEAF: u8 = 1;

/// A tree node as seen from its parent's child array (8 bytes, eight per cache line). An inner node
/// (`mask != 0`) sends `key` to child slot `base + ((key[dim] >> shift) & mask)`; a leaf
/// (`mask == 0`) starts at block `base` (or is empty: `base == EMPTY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, align(8))]
pub(crate) struct Slot {
    base: u32,
    mask: u16,
    dim: u8,
    shift: u8,
}

impl Slot {
    const fn leaf(first_block: u32) -> Slot {
        Slot { base: first_block, mask: 0, dim: 0, shift: 0 }
    }

    const fn half_leaf(block: u32) -> Slot {
        Slot { base: block, mask: 0, dim: HALF_LEAF, shift: 0 }
    }

    #[inline(always)]
    fn is_inner(self) -> bool {
        self.mask != 0
    }

    /// Index of the child slot `key` falls into.
    #[inline(always)]
    fn child<const K: usize>(self, key: &[u32; K]) -> u32 {
        let v = key[usize::from(self.dim) & (K - 1)].wrapping_shr(u32::from(self.shift));
        self.base.wrapping_add(v & u32::from(self.mask))
    }
}

/// Up to [`LANES`] boxes in priority order, structure-of-arrays: lane `j` matches when
/// `key[d] - lo[d][j] <= span[d][j]` (unsigned, wrapping) for every `d`. Spans are stored with the
/// sign bit flipped so that the unsigned comparison is a signed one, which SSE2 has (`pcmpgtd`).
/// Unused lanes hold [`NO_RULE`], which never beats a real match.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Block<const D: usize, const L: usize> {
    lo: [[u32; L]; D],
    span: [[i32; L]; D],
    rule: [u32; L],
    /// The leaf's last block.
    last: bool,
}

/// A key broadcast to every lane, built once per lookup: `wide[d][j] = key[d]`.
pub(crate) type Wide<const D: usize, const L: usize> = [[u32; L]; D];

#[inline(always)]
fn bias(span: u32) -> i32 {
    i32::from_ne_bytes((span ^ 0x8000_0000).to_ne_bytes())
}

impl<const D: usize, const L: usize> Block<D, L> {
    fn empty() -> Block<D, L> {
        Block { lo: [[0; L]; D], span: [[i32::MAX; L]; D], rule: [NO_RULE; L], last: false }
    }

    /// The best (lowest) rule of the block matching `wide`, or [`NO_RULE`]. Written as flat,
    /// branch-free loops over fixed-size arrays so that LLVM vectorises it with baseline SSE2
    /// (about 80 instructions for 8 lanes × 5 dimensions, no branches). Not inlined: inside the
    /// batch loop LLVM leaves this loop scalar (four times the instructions).
    #[inline(never)]
    fn first_rule(&self, wide: &Wide<D, L>) -> u32 {
        let mut miss = [[0i32; L]; D];
        let lanes = miss.as_flattened_mut().iter_mut().zip(wide.as_flattened().iter().zip(self.lo.as_flattened()));
        for ((m, (&k, &lo)), &span) in lanes.zip(self.span.as_flattened()) {
            let x = bias(k.wrapping_sub(lo));
            *m = if x > span { -1 } else { 0 };
        }
        let mut any_miss = [0i32; L];
        for row in &miss {
            for (a, &m) in any_miss.iter_mut().zip(row) {
                *a |= m;
            }
        }
        let mut best = NO_RULE;
        for (&rule, &m) in self.rule.iter().zip(&any_miss) {
            best = best.min(rule | u32::from_ne_bytes(m.to_ne_bytes()));
        }
        best
    }
}

/// Best rule of the chain of blocks starting at `first` that beats `best`.
#[inline(always)]
fn scan_blocks<const D: usize, const L: usize>(
    blocks: &[Block<D, L>],
    first: u32,
    wide: &Wide<D, L>,
    best: u32,
) -> u32 {
    let mut i = first as usize;
    while let Some(block) = blocks.get(i) {
        if block.rule[0] >= best {
            break;
        }
        let rule = block.first_rule(wide);
        if rule != NO_RULE {
            return rule.min(best);
        }
        if block.last {
            break;
        }
        i += 1;
    }
    best
}

/// `key` broadcast to every lane.
#[inline(always)]
fn widen<const D: usize, const K: usize, const L: usize>(key: &[u32; K]) -> Wide<D, L> {
    let mut wide = [[0u32; L]; D];
    for (row, &k) in wide.iter_mut().zip(key.iter()) {
        *row = [k; L];
    }
    wide
}

fn arena_index(len: usize, what: &'static str) -> Result<u32, BuildError> {
    u32::try_from(len).ok().filter(|&i| i < EMPTY / 2).ok_or(BuildError::ArenaOverflow(what))
}

/// A box: inclusive ranges per dimension, and the rule it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RBox<const D: usize> {
    pub(crate) lo: [u32; D],
    pub(crate) hi: [u32; D],
    pub(crate) rule: u32,
}

#[derive(Debug, Clone, Copy)]
struct TreeRoot {
    root: Slot,
    /// Inner levels on the longest path.
    depth: u32,
    /// Best (lowest) rule in the tree.
    min_rule: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    binth: usize,
    spfac: f64,
    max_bits: u32,
    root_max_bits: u32,
    max_depth: u32,
    merge_below: usize,
    /// Largest node that becomes a leaf when no cut halves it.
    leaf_max: usize,
}

impl Params {
    pub(crate) fn from_options(o: &BuildOptions) -> Params {
        Params {
            binth: o.binth.clamp(1, 4096),
            spfac: if o.spfac.is_finite() { o.spfac.clamp(1.0, 64.0) } else { 4.0 },
            max_bits: o.max_bits.clamp(1, 16),
            root_max_bits: o.root_max_bits.clamp(1, 16),
            max_depth: 24,
            merge_below: o.merge_below,
            leaf_max: o.leaf_max.max(o.binth),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ForestStats {
    pub(crate) boxes: usize,
    pub(crate) trees: usize,
    pub(crate) slots: usize,
    pub(crate) blocks: usize,
    pub(crate) max_depth: u32,
    pub(crate) tree_sizes: Vec<usize>,
}

/// All trees of one address family. `K` is the padded key length (a power of two above `D`).
#[derive(Debug, Clone)]
pub(crate) struct Forest<const D: usize, const K: usize> {
    slots: Vec<Slot>,
    blocks: Vec<Block<D, LANES>>,
    halves: Vec<Block<D, HALF>>,
    trees: Vec<TreeRoot>,
    boxes: usize,
    tree_sizes: Vec<usize>,
}

impl<const D: usize, const K: usize> Forest<D, K> {
    /// Builds the trees for `boxes` (in priority order). `widths[d]` is the number of significant
    /// bits of dimension `d`; `part` names the first word of the source and destination address.
    pub(crate) fn build(
        boxes: Vec<RBox<D>>,
        widths: [u8; D],
        part: (usize, usize),
        small_prefix: u32,
        params: &Params,
    ) -> Result<Forest<D, K>, BuildError> {
        let mut forest = Forest {
            slots: Vec::new(),
            blocks: Vec::new(),
            halves: Vec::new(),
            trees: Vec::new(),
            boxes: boxes.len(),
            tree_sizes: Vec::new(),
        };
        if boxes.is_empty() {
            return Ok(forest);
        }
        if boxes.len() >= (EMPTY as usize) {
            return Err(BuildError::ArenaOverflow("boxes"));
        }
        // CutSplit partition by which address fields are small.
        let small = |b: &RBox<D>, d: usize| -> bool {
            let span = u64::from(b.hi[d].wrapping_sub(b.lo[d]));
            let w = u32::from(widths[d]);
            span >> w.saturating_sub(small_prefix) == 0
        };
        let mut subsets: [Vec<u32>; 4] = Default::default();
        for (i, b) in boxes.iter().enumerate() {
            let class = (usize::from(small(b, part.0)) << 1) | usize::from(small(b, part.1));
            let id = u32::try_from(i).map_err(|_| BuildError::ArenaOverflow("boxes"))?;
            subsets[class].push(id);
        }
        // A small subset costs a whole tree walk per lookup; below `merge_below` boxes it joins a
        // larger tree that cuts only fields it is small in too (small-both joins small-source or
        // small-destination; those join neither-small), or, for neither-small, the largest tree.
        let fits = |from: usize, into: usize| from != into && (into & from) == into;
        let small_subset = |subsets: &[Vec<u32>; 4]| {
            (0..4)
                .filter(|&c| !subsets[c].is_empty() && subsets[c].len() < params.merge_below)
                .min_by_key(|&c| subsets[c].len())
        };
        while let Some(from) = small_subset(&subsets) {
            let target = (0..4)
                .filter(|&c| !subsets[c].is_empty() && c != from && (fits(from, c) || from == 0))
                .max_by_key(|&c| subsets[c].len());
            let Some(into) = target else { break };
            if subsets[into].len() < subsets[from].len() && from != 0 {
                break;
            }
            let moved = std::mem::take(&mut subsets[from]);
            subsets[into].extend(moved);
            subsets[into].sort_unstable();
        }
        let mut leaf_cache: HashMap<Vec<u32>, Slot> = HashMap::new();
        let mut node_cache: HashMap<Vec<u32>, (Slot, u32)> = HashMap::new();
        let mut roots = Vec::new();
        for ids in subsets {
            if ids.is_empty() {
                continue;
            }
            let min_rule = ids.iter().filter_map(|&i| boxes.get(i as usize)).map(|b| b.rule).min().unwrap_or(NO_RULE);
            let size = ids.len();
            let max_slots = forest.slots.len() + 64 * size + 65_536;
            let max_leaf_boxes = forest.blocks.len() * LANES + forest.halves.len() * HALF + 64 * size + 65_536;
            let mut builder = Builder::<D> {
                boxes: &boxes,
                params,
                slots: &mut forest.slots,
                blocks: &mut forest.blocks,
                halves: &mut forest.halves,
                leaf_cache: &mut leaf_cache,
                node_cache: &mut node_cache,
                offs: Vec::new(),
                diff: Vec::new(),
                max_slots,
                max_leaf_boxes,
            };
            let region = Region { lo: [0; D], w: widths };
            let (root, depth) = builder.node(&region, ids, 0)?;
            roots.push((TreeRoot { root, depth, min_rule }, size));
        }
        roots.sort_by_key(|(t, _)| t.min_rule);
        forest.trees = roots.iter().map(|(t, _)| *t).collect();
        forest.tree_sizes = roots.iter().map(|(_, s)| *s).collect();
        forest.slots.shrink_to_fit();
        forest.blocks.shrink_to_fit();
        forest.halves.shrink_to_fit();
        Ok(forest)
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> Slot {
        match self.slots.get(index as usize) {
            Some(s) => *s,
            None => Slot::leaf(EMPTY),
        }
    }

    #[inline(always)]
    fn leaf_of(&self, root: Slot, key: &[u32; K]) -> Slot {
        let mut s = root;
        while s.is_inner() {
            s = self.slot(s.child(key));
        }
        s
    }

    /// Best rule of `leaf` that beats `best`.
    #[inline(always)]
    fn scan(&self, leaf: Slot, key: &[u32; K], best: u32) -> u32 {
        if leaf.dim == HALF_LEAF {
            match self.halves.get(leaf.base as usize) {
                Some(block) if block.rule[0] < best => block.first_rule(&widen::<D, K, HALF>(key)).min(best),
                _ => best,
            }
        } else {
            scan_blocks(&self.blocks, leaf.base, &widen::<D, K, LANES>(key), best)
        }
    }

    /// The best rule matching `key`, or [`NO_RULE`].
    #[inline]
    pub(crate) fn lookup(&self, key: &[u32; K]) -> u32 {
        let mut best = NO_RULE;
        for tree in &self.trees {
            if tree.min_rule >= best {
                break;
            }
            let leaf = self.leaf_of(tree.root, key);
            best = self.scan(leaf, key, best);
        }
        best
    }

    /// Work done by `lookup(key)`: (tree steps, blocks checked, trees visited). For tuning.
    #[cfg(test)]
    pub(crate) fn cost(&self, key: &[u32; K]) -> (usize, usize, usize) {
        let (mut steps, mut blocks, mut trees) = (0, 0, 0);
        let mut best = NO_RULE;
        for tree in &self.trees {
            if tree.min_rule >= best {
                break;
            }
            trees += 1;
            let mut s = tree.root;
            while s.is_inner() {
                steps += 1;
                s = self.slot(s.child(key));
            }
            if s.dim == HALF_LEAF {
                if self.halves.get(s.base as usize).is_some_and(|b| b.rule[0] < best) {
                    blocks += 1;
                }
            } else {
                let mut i = s.base as usize;
                while let Some(block) = self.blocks.get(i) {
                    if block.rule[0] >= best {
                        break;
                    }
                    blocks += 1;
                    if block.first_rule(&widen::<D, K, LANES>(key)) != NO_RULE || block.last {
                        break;
                    }
                    i += 1;
                }
            }
            best = self.scan(s, key, best);
        }
        (steps, blocks, trees)
    }

    /// `out[i] = lookup(keys[i])` for up to [`BATCH`] keys, walking all keys one level at a time.
    #[inline]
    pub(crate) fn lookup_batch(&self, keys: &[[u32; K]], out: &mut [u32]) {
        let n = keys.len().min(out.len()).min(BATCH);
        let (keys, out) = (&keys[..n], &mut out[..n]);
        out.fill(NO_RULE);
        let mut cur = [Slot::leaf(EMPTY); BATCH];
        let cur = &mut cur[..n];
        for tree in &self.trees {
            if out.iter().all(|&b| b <= tree.min_rule) {
                continue;
            }
            // Walk only the keys this tree can still improve, one level at a time across all of
            // them, dropping each key from the list when it reaches its leaf.
            let mut todo = [0u8; BATCH];
            let mut active = 0;
            for (i, (c, &best)) in cur.iter_mut().zip(out.iter()).enumerate() {
                *c = tree.root;
                todo[active] = u8::try_from(i).unwrap_or(0);
                active += usize::from(best > tree.min_rule);
            }
            let walking = active;
            let mut live = [0u8; BATCH];
            live.copy_from_slice(&todo);
            let mut n_live = if tree.root.is_inner() { active } else { 0 };
            while n_live > 0 {
                let mut next = 0;
                for t in 0..n_live {
                    let i = usize::from(live[t]);
                    let (Some(c), Some(key)) = (cur.get_mut(i), keys.get(i)) else { continue };
                    let s = self.slot(c.child(key));
                    *c = s;
                    live[next] = live[t];
                    next += usize::from(s.is_inner());
                }
                n_live = next;
            }
            for &i in &todo[..walking] {
                let i = usize::from(i);
                if let (Some(c), Some(key), Some(best)) = (cur.get(i), keys.get(i), out.get_mut(i)) {
                    *best = self.scan(*c, key, *best);
                }
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.blocks.capacity() * std::mem::size_of::<Block<D, LANES>>()
            + self.halves.capacity() * std::mem::size_of::<Block<D, HALF>>()
            + self.trees.capacity() * std::mem::size_of::<TreeRoot>()
    }

    pub(crate) fn stats(&self) -> ForestStats {
        ForestStats {
            boxes: self.boxes,
            trees: self.trees.len(),
            slots: self.slots.len(),
            blocks: self.blocks.len() + self.halves.len(),
            max_depth: self.trees.iter().map(|t| t.depth).max().unwrap_or(0),
            tree_sizes: self.tree_sizes.clone(),
        }
    }
}

/// A node's region: in dimension `d`, the aligned range `lo[d] .. lo[d] + 2^w[d]`.
#[derive(Debug, Clone, Copy)]
struct Region<const D: usize> {
    lo: [u32; D],
    w: [u8; D],
}

impl<const D: usize> Region<D> {
    #[inline]
    fn hi(&self, d: usize) -> u32 {
        let span = (1u64 << self.w[d]) - 1;
        #[allow(clippy::cast_possible_truncation)] // lo is aligned to 2^w, so lo + span fits in 32 bits
        let hi = (u64::from(self.lo[d]) + span) as u32;
        hi
    }
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    dim: usize,
    bits: u32,
}

struct Builder<'a, const D: usize> {
    boxes: &'a [RBox<D>],
    params: &'a Params,
    slots: &'a mut Vec<Slot>,
    blocks: &'a mut Vec<Block<D, LANES>>,
    halves: &'a mut Vec<Block<D, HALF>>,
    /// Leaves by box list.
    leaf_cache: &'a mut HashMap<Vec<u32>, Slot>,
    /// Inner subtrees by their boxes' geometry relative to the region (see `node_key`).
    node_cache: &'a mut HashMap<Vec<u32>, (Slot, u32)>,
    /// Scratch: per box, clipped offsets relative to the region in the dimension being evaluated.
    offs: Vec<(u32, u32)>,
    diff: Vec<i64>,
    max_slots: usize,
    max_leaf_boxes: usize,
}

impl<const D: usize> Builder<'_, D> {
    fn slot_index(&self) -> Result<u32, BuildError> {
        u32::try_from(self.slots.len()).ok().filter(|&i| i < EMPTY / 2).ok_or(BuildError::ArenaOverflow("slots"))
    }

    fn bx(&self, id: u32) -> &RBox<D> {
        // ids are indexes into `boxes` by construction
        &self.boxes[id as usize]
    }

    fn covers_dim(&self, b: &RBox<D>, r: &Region<D>, d: usize) -> bool {
        b.lo[d] <= r.lo[d] && b.hi[d] >= r.hi(d)
    }

    fn covers(&self, b: &RBox<D>, r: &Region<D>) -> bool {
        (0..D).all(|d| self.covers_dim(b, r, d))
    }

    /// Drops boxes that can never be the first match inside `r`: everything after a box covering
    /// `r`, and (for small lists) boxes whose part inside `r` lies inside an earlier box.
    fn prune(&self, r: &Region<D>, ids: &mut Vec<u32>) {
        if let Some(p) = ids.iter().position(|&i| self.covers(self.bx(i), r)) {
            ids.truncate(p + 1);
        }
        if ids.len() <= 64 {
            let clip = |b: &RBox<D>, d: usize| (b.lo[d].max(r.lo[d]), b.hi[d].min(r.hi(d)));
            let mut keep: Vec<u32> = Vec::with_capacity(ids.len());
            for &i in ids.iter() {
                let b = self.bx(i);
                let shadowed = keep.iter().any(|&k| {
                    let a = self.bx(k);
                    (0..D).all(|d| {
                        let (lo, hi) = clip(b, d);
                        a.lo[d] <= lo && hi <= a.hi[d]
                    })
                });
                if !shadowed {
                    keep.push(i);
                }
            }
            *ids = keep;
        }
    }

    fn leaf(&mut self, ids: &[u32]) -> Result<Slot, BuildError> {
        if ids.is_empty() {
            return Ok(Slot::leaf(EMPTY));
        }
        if let Some(&slot) = self.leaf_cache.get(ids) {
            return Ok(slot);
        }
        let slot = if ids.len() <= HALF {
            let index = arena_index(self.halves.len(), "blocks")?;
            let block = self.fill::<HALF>(ids, true);
            self.halves.push(block);
            Slot::half_leaf(index)
        } else {
            let first = arena_index(self.blocks.len(), "blocks")?;
            let chunks = ids.chunks(LANES);
            let n = chunks.len();
            for (c, chunk) in chunks.enumerate() {
                let block = self.fill::<LANES>(chunk, c + 1 == n);
                self.blocks.push(block);
            }
            Slot::leaf(first)
        };
        self.leaf_cache.insert(ids.to_vec(), slot);
        Ok(slot)
    }

    fn fill<const L: usize>(&self, ids: &[u32], last: bool) -> Block<D, L> {
        let mut block = Block::<D, L>::empty();
        for (j, &id) in ids.iter().enumerate().take(L) {
            let b = self.bx(id);
            for d in 0..D {
                block.lo[d][j] = b.lo[d];
                block.span[d][j] = bias(b.hi[d].wrapping_sub(b.lo[d]));
            }
            block.rule[j] = b.rule;
        }
        block.last = last;
        block
    }

    /// Region compaction: in every dimension, the smallest aligned prefix of `r` that holds every
    /// box's part inside `r`. Keys outside it match no box of the node, so wherever the subtree
    /// routes them, the leaf's full box check rejects them; the cuts then spend their bits where
    /// the boxes differ instead of on leading bits they all share.
    fn compact(&self, r: &Region<D>, ids: &[u32]) -> Region<D> {
        let mut out = *r;
        if ids.is_empty() {
            return out;
        }
        for d in 0..D {
            let rhi = r.hi(d);
            let mut lo = u32::MAX;
            let mut hi = 0u32;
            for &i in ids {
                let b = self.bx(i);
                lo = lo.min(b.lo[d].max(r.lo[d]));
                hi = hi.max(b.hi[d].min(rhi));
            }
            let varying = lo ^ hi;
            let w = if varying == 0 { 0 } else { 32 - varying.leading_zeros() };
            if w < u32::from(r.w[d]) {
                out.w[d] = u8::try_from(w).unwrap_or(r.w[d]);
                out.lo[d] = if w == 32 { 0 } else { lo & !((1u32 << w) - 1) };
            }
        }
        out
    }

    /// The geometry of `ids` relative to `r`: equal keys build identical subtrees wherever they are.
    fn node_key(&self, r: &Region<D>, ids: &[u32]) -> Vec<u32> {
        let mut key = Vec::with_capacity(1 + ids.len() * (1 + 2 * D));
        key.push(r.w.iter().fold(0u32, |acc, &w| acc.wrapping_mul(33).wrapping_add(u32::from(w))));
        key.extend(r.w.iter().map(|&w| u32::from(w)));
        for &i in ids {
            let b = self.bx(i);
            key.push(i);
            for d in 0..D {
                key.push(b.lo[d].max(r.lo[d]) - r.lo[d]);
                key.push(b.hi[d].min(r.hi(d)) - r.lo[d]);
            }
        }
        key
    }

    /// Builds the node for `ids` inside `r`; returns its slot (base unset for a leaf) and depth.
    fn node(&mut self, r: &Region<D>, mut ids: Vec<u32>, depth: u32) -> Result<(Slot, u32), BuildError> {
        let compact = self.compact(r, &ids);
        let r = &compact;
        self.prune(r, &mut ids);
        if depth == 14 && ids.len() > self.params.binth && std::env::var("CBDEBUG").is_ok() {
            eprintln!("DEEP region lo={:x?} w={:?}", r.lo, r.w);
            for &i in ids.iter().take(20) {
                let b = self.bx(i);
                eprintln!("  r{} lo={:x?} hi={:x?}", b.rule, b.lo, b.hi);
            }
        }
        // Past the size budget, nodes stop being cut: lookups scan longer leaves instead of the
        // structure growing without bound on adversarial rule sets.
        let over_budget = self.slots.len() > self.max_slots
            || self.blocks.len() * LANES + self.halves.len() * HALF > self.max_leaf_boxes;
        if ids.len() <= self.params.binth || depth >= self.params.max_depth || over_budget {
            return Ok((self.leaf(&ids)?, 0));
        }
        let cache_key = if ids.len() <= 4096 { Some(self.node_key(r, &ids)) } else { None };
        if let Some(hit) = cache_key.as_ref().and_then(|k| self.node_cache.get(k)) {
            return Ok(*hit);
        }
        let Some((cut, largest)) = self.choose_cut(r, &ids, depth) else {
            return Ok((self.leaf(&ids)?, 0));
        };
        // A few boxes that no cut separates well are cheaper scanned (one or two more blocks)
        // than peeled off one per level.
        if ids.len() <= self.params.leaf_max && largest * 2 > ids.len() {
            return Ok((self.leaf(&ids)?, 0));
        }

        let d = cut.dim;
        let shift = u32::from(r.w[d]) - cut.bits;
        let fan = 1usize << cut.bits;
        let base = self.slot_index()?;
        if (base as usize) + fan >= EMPTY as usize {
            return Err(BuildError::ArenaOverflow("slots"));
        }
        self.slots.resize(self.slots.len() + fan, Slot::leaf(EMPTY));

        let rhi = r.hi(d);
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); fan];
        for &i in &ids {
            let b = self.bx(i);
            let a = (b.lo[d].max(r.lo[d]) - r.lo[d]) >> shift;
            let z = (b.hi[d].min(rhi) - r.lo[d]) >> shift;
            for list in &mut lists[a as usize..=z as usize] {
                list.push(i);
            }
        }
        drop(ids);
        let mut max_depth = 0;
        for (c, list) in lists.into_iter().enumerate() {
            let mut child = *r;
            child.w[d] = u8::try_from(shift).unwrap_or(0);
            let c32 = u32::try_from(c).map_err(|_| BuildError::ArenaOverflow("fan-out"))?;
            child.lo[d] = r.lo[d] | (c32 << shift);
            let (slot, cd) = self.node(&child, list, depth + 1)?;
            if let Some(s) = self.slots.get_mut(base as usize + c) {
                *s = slot;
            }
            max_depth = max_depth.max(cd);
        }
        let slot = Slot {
            base,
            mask: u16::try_from(fan - 1).map_err(|_| BuildError::ArenaOverflow("fan-out"))?,
            dim: u8::try_from(d).map_err(|_| BuildError::ArenaOverflow("dimension"))?,
            shift: u8::try_from(shift).map_err(|_| BuildError::ArenaOverflow("shift"))?,
        };
        let result = (slot, max_depth + 1);
        if let Some(k) = cache_key {
            self.node_cache.insert(k, result);
        }
        Ok(result)
    }

    /// HiCuts: per dimension, the fan-out within the space budget that minimises the largest child;
    /// across dimensions, the smallest largest child, then the least space.
    fn choose_cut(&mut self, r: &Region<D>, ids: &[u32], depth: u32) -> Option<(Cut, usize)> {
        let n = ids.len();
        let max_bits = if depth == 0 { self.params.root_max_bits } else { self.params.max_bits };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let budget = (self.params.spfac * n as f64) as usize;
        let binth = self.params.binth;
        // (largest child, space, cut)
        let mut best: Option<(usize, usize, Cut)> = None;
        for d in 0..D {
            let w = u32::from(r.w[d]);
            if w == 0 {
                continue;
            }
            let rhi = r.hi(d);
            let rlo = r.lo[d];
            self.offs.clear();
            let mut all_cover = true;
            for &i in ids {
                let b = &self.boxes[i as usize];
                let lo = b.lo[d].max(rlo) - rlo;
                let hi = b.hi[d].min(rhi) - rlo;
                all_cover &= b.lo[d] <= rlo && b.hi[d] >= rhi;
                self.offs.push((lo, hi));
            }
            if all_cover {
                continue;
            }
            let mut dim_best: Option<(usize, usize, u32)> = None;
            for bits in 1..=w.min(max_bits) {
                let fan = 1usize << bits;
                let shift = w - bits;
                self.diff.clear();
                self.diff.resize(fan + 1, 0);
                let mut sum = 0usize;
                for &(lo, hi) in &self.offs {
                    let a = (lo >> shift) as usize;
                    let z = (hi >> shift) as usize;
                    sum += z - a + 1;
                    self.diff[a] += 1;
                    self.diff[z + 1] -= 1;
                }
                let space = sum + fan;
                if space > budget && bits > 1 {
                    break;
                }
                let mut run = 0i64;
                let mut largest = 0i64;
                for &x in &self.diff[..fan] {
                    run += x;
                    largest = largest.max(run);
                }
                let largest = usize::try_from(largest).unwrap_or(n);
                if dim_best.is_none_or(|(l, _, _)| largest < l) {
                    dim_best = Some((largest, space, bits));
                }
                if largest <= binth {
                    break;
                }
            }
            if let Some((largest, space, bits)) = dim_best
                && best.is_none_or(|(l, s, _)| (largest, space) < (l, s))
            {
                best = Some((largest, space, Cut { dim: d, bits }));
            }
        }
        best.map(|(largest, _, c)| (c, largest))
    }
}

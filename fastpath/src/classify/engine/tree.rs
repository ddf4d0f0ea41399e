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

const INTERNAL: u32 = u32::MAX;
const EMPTY: u32 = u32::MAX - 1;
/// Slot 0 of every forest: an empty leaf where batch walks park keys that skip a tree.
const PARKED: u32 = 0;

/// A tree node as seen from its parent's child array: either an inner node (`leaf == INTERNAL`),
/// whose children are `base + child_index(key)`, or a leaf (`leaf` = its first block, or `EMPTY`),
/// whose masks are zero and whose base is its own index, so stepping from a leaf stays on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, align(16))]
pub(crate) struct Slot {
    base: u32,
    leaf: u32,
    mask_a: u16,
    /// Mask of the second dimension's bits, already shifted above the first dimension's bits.
    mask_b: u16,
    dim_a: u8,
    shift_a: u8,
    dim_b: u8,
    /// Rotation that brings the second dimension's bits to just above the first's.
    rot_b: u8,
}

impl Slot {
    const fn leaf(first_block: u32) -> Slot {
        Slot { base: 0, leaf: first_block, mask_a: 0, mask_b: 0, dim_a: 0, shift_a: 0, dim_b: 0, rot_b: 0 }
    }

    /// Index of the child slot `key` falls into (the slot's own index for a leaf).
    #[inline(always)]
    fn step<const K: usize>(&self, key: &[u32; K]) -> u32 {
        let a = key[usize::from(self.dim_a) & (K - 1)].wrapping_shr(u32::from(self.shift_a)) & u32::from(self.mask_a);
        let b = key[usize::from(self.dim_b) & (K - 1)].rotate_right(u32::from(self.rot_b)) & u32::from(self.mask_b);
        self.base.wrapping_add(a).wrapping_add(b)
    }
}

/// Up to [`LANES`] boxes in priority order, structure-of-arrays: `key[d] - lo[d][j] <= span[d][j]`
/// (unsigned, wrapping) for every `d` means lane `j` matches. Unused lanes can never match (their
/// last dimension is `lo = u32::MAX, span = 0`, a value no key has there).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Block<const D: usize> {
    lo: [[u32; LANES]; D],
    span: [[u32; LANES]; D],
    rule: [u32; LANES],
    /// The leaf's last block.
    last: bool,
}

impl<const D: usize> Block<D> {
    fn empty() -> Block<D> {
        let mut b = Block { lo: [[0; LANES]; D], span: [[u32::MAX; LANES]; D], rule: [NO_RULE; LANES], last: false };
        if let Some(l) = b.lo.last_mut() {
            *l = [u32::MAX; LANES];
        }
        if let Some(s) = b.span.last_mut() {
            *s = [0; LANES];
        }
        b
    }

    /// Bit `j` set when lane `j` matches.
    #[inline(always)]
    fn hits<const K: usize>(&self, key: &[u32; K]) -> u32 {
        let mut miss = [0u32; LANES];
        for d in 0..D {
            let k = key[d];
            for j in 0..LANES {
                miss[j] |= u32::from(k.wrapping_sub(self.lo[d][j]) > self.span[d][j]);
            }
        }
        let mut bits = 0u32;
        for (j, m) in miss.iter().enumerate() {
            bits |= (m ^ 1) << j;
        }
        bits
    }
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
    root: u32,
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
    blocks: Vec<Block<D>>,
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
        let mut forest =
            Forest { slots: Vec::new(), blocks: Vec::new(), trees: Vec::new(), boxes: boxes.len(), tree_sizes: Vec::new() };
        forest.slots.push(Slot::leaf(EMPTY));
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
        // Tiny subsets are cheaper inside the general tree than as a tree of their own.
        for class in [3, 2, 1] {
            if !subsets[class].is_empty() && subsets[class].len() < params.merge_below {
                let moved = std::mem::take(&mut subsets[class]);
                subsets[0].extend(moved);
            }
        }
        subsets[0].sort_unstable();

        let mut leaf_cache: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut node_cache: HashMap<Vec<u32>, (Slot, u32)> = HashMap::new();
        let mut roots = Vec::new();
        for ids in subsets {
            if ids.is_empty() {
                continue;
            }
            let min_rule = ids.iter().filter_map(|&i| boxes.get(i as usize)).map(|b| b.rule).min().unwrap_or(NO_RULE);
            let size = ids.len();
            let mut builder = Builder::<D> {
                boxes: &boxes,
                params,
                slots: &mut forest.slots,
                blocks: &mut forest.blocks,
                leaf_cache: &mut leaf_cache,
                node_cache: &mut node_cache,
                offs: Vec::new(),
                diff: Vec::new(),
            };
            let region = Region { lo: [0; D], w: widths };
            let root = builder.slot_index()?;
            builder.slots.push(Slot::leaf(EMPTY));
            let (mut slot, depth) = builder.node(&region, ids, 0)?;
            if slot.leaf != INTERNAL {
                slot.base = root;
            }
            if let Some(s) = forest.slots.get_mut(root as usize) {
                *s = slot;
            }
            roots.push((TreeRoot { root, depth, min_rule }, size));
        }
        roots.sort_by_key(|(t, _)| t.min_rule);
        forest.trees = roots.iter().map(|(t, _)| *t).collect();
        forest.tree_sizes = roots.iter().map(|(_, s)| *s).collect();
        forest.slots.shrink_to_fit();
        forest.blocks.shrink_to_fit();
        Ok(forest)
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> Slot {
        match self.slots.get(index as usize) {
            Some(s) => *s,
            None => Slot::leaf(EMPTY),
        }
    }

    /// Best rule of the leaf starting at `first` that beats `best`.
    #[inline(always)]
    fn scan(&self, first: u32, key: &[u32; K], best: u32) -> u32 {
        let mut i = first as usize;
        while let Some(block) = self.blocks.get(i) {
            if block.rule[0] >= best {
                break;
            }
            let hits = block.hits(key);
            if hits != 0 {
                let lane = hits.trailing_zeros() as usize;
                return block.rule.get(lane).map_or(best, |&r| r.min(best));
            }
            if block.last {
                break;
            }
            i += 1;
        }
        best
    }

    /// The best rule matching `key`, or [`NO_RULE`].
    #[inline]
    pub(crate) fn lookup(&self, key: &[u32; K]) -> u32 {
        let mut best = NO_RULE;
        for tree in &self.trees {
            if tree.min_rule >= best {
                break;
            }
            let mut s = self.slot(tree.root);
            while s.leaf == INTERNAL {
                s = self.slot(s.step(key));
            }
            if s.leaf != EMPTY {
                best = self.scan(s.leaf, key, best);
            }
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
            let mut s = self.slot(tree.root);
            while s.leaf == INTERNAL {
                steps += 1;
                s = self.slot(s.step(key));
            }
            if s.leaf != EMPTY {
                let mut i = s.leaf as usize;
                while let Some(block) = self.blocks.get(i) {
                    if block.rule[0] >= best {
                        break;
                    }
                    blocks += 1;
                    let hits = block.hits(key);
                    if hits != 0 {
                        best = best.min(block.rule[hits.trailing_zeros() as usize]);
                        break;
                    }
                    if block.last {
                        break;
                    }
                    i += 1;
                }
            }
        }
        (steps, blocks, trees)
    }

    /// `out[i] = lookup(keys[i])` for up to [`BATCH`] keys, walking all keys one level at a time.
    #[inline]
    pub(crate) fn lookup_batch(&self, keys: &[[u32; K]], out: &mut [u32]) {
        let n = keys.len().min(out.len()).min(BATCH);
        let (keys, out) = (&keys[..n], &mut out[..n]);
        out.fill(NO_RULE);
        let mut cur = [0u32; BATCH];
        let cur = &mut cur[..n];
        for tree in &self.trees {
            if out.iter().all(|&b| b <= tree.min_rule) {
                continue;
            }
            // Keys whose match already beats this tree park on the shared empty leaf.
            for (c, &best) in cur.iter_mut().zip(out.iter()) {
                *c = if best <= tree.min_rule { PARKED } else { tree.root };
            }
            for _ in 0..tree.depth {
                let mut inner = false;
                for (c, key) in cur.iter_mut().zip(keys) {
                    let s = self.slot(*c);
                    inner |= s.leaf == INTERNAL;
                    *c = s.step(key);
                }
                if !inner {
                    break;
                }
            }
            for ((c, key), best) in cur.iter().zip(keys).zip(out.iter_mut()) {
                let s = self.slot(*c);
                if s.leaf < EMPTY {
                    *best = self.scan(s.leaf, key, *best);
                }
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.blocks.capacity() * std::mem::size_of::<Block<D>>()
            + self.trees.capacity() * std::mem::size_of::<TreeRoot>()
    }

    pub(crate) fn stats(&self) -> ForestStats {
        ForestStats {
            boxes: self.boxes,
            trees: self.trees.len(),
            slots: self.slots.len(),
            blocks: self.blocks.len(),
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
    blocks: &'a mut Vec<Block<D>>,
    /// Leaves by box list.
    leaf_cache: &'a mut HashMap<Vec<u32>, u32>,
    /// Inner subtrees by their boxes' geometry relative to the region (see `node_key`).
    node_cache: &'a mut HashMap<Vec<u32>, (Slot, u32)>,
    /// Scratch: per box, clipped offsets relative to the region in the dimension being evaluated.
    offs: Vec<(u32, u32)>,
    diff: Vec<i64>,
}

impl<const D: usize> Builder<'_, D> {
    fn slot_index(&self) -> Result<u32, BuildError> {
        u32::try_from(self.slots.len()).ok().filter(|&i| i < EMPTY).ok_or(BuildError::ArenaOverflow("slots"))
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
        if let Some(&first) = self.leaf_cache.get(ids) {
            return Ok(Slot::leaf(first));
        }
        let first = u32::try_from(self.blocks.len()).ok().filter(|&i| i < EMPTY).ok_or(BuildError::ArenaOverflow("blocks"))?;
        let chunks = ids.chunks(LANES);
        let n = chunks.len();
        for (c, chunk) in chunks.enumerate() {
            let mut block = Block::<D>::empty();
            for (j, &id) in chunk.iter().enumerate() {
                let b = *self.bx(id);
                for d in 0..D {
                    block.lo[d][j] = b.lo[d];
                    block.span[d][j] = b.hi[d].wrapping_sub(b.lo[d]);
                }
                block.rule[j] = b.rule;
            }
            block.last = c + 1 == n;
            self.blocks.push(block);
        }
        self.leaf_cache.insert(ids.to_vec(), first);
        Ok(Slot::leaf(first))
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
            for &i in ids.iter().take(20) { let b = self.bx(i); eprintln!("  r{} lo={:x?} hi={:x?}", b.rule, b.lo, b.hi); }
        }
        if ids.len() <= self.params.binth || depth >= self.params.max_depth {
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
            let (mut slot, cd) = self.node(&child, list, depth + 1)?;
            if slot.leaf != INTERNAL {
                slot.base = base + c32;
            }
            if let Some(s) = self.slots.get_mut(base as usize + c) {
                *s = slot;
            }
            max_depth = max_depth.max(cd);
        }
        let slot = Slot {
            base,
            leaf: INTERNAL,
            mask_a: u16::try_from(fan - 1).map_err(|_| BuildError::ArenaOverflow("fan-out"))?,
            mask_b: 0,
            dim_a: u8::try_from(d).map_err(|_| BuildError::ArenaOverflow("dimension"))?,
            shift_a: u8::try_from(shift).map_err(|_| BuildError::ArenaOverflow("shift"))?,
            // The last key word is padding and always zero.
            dim_b: 0xFF,
            rot_b: 0,
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

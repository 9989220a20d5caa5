//! Places in the kernel's arrays: service ids, real-server slots and scheduling ranges. Pure
//! bookkeeping, no kernel.
//!
//! A place given up is not reused at once: a packet on another CPU may have read the old service
//! or scheduling entry just before it was replaced, and still be about to read what that entry
//! pointed at. Freed places wait [`GRACE`] (far longer than any run of the XDP program) before
//! they are handed out again.
use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

/// How long a freed place waits before it is reused.
pub const GRACE: Duration = Duration::from_millis(200);

/// Indexes `0..capacity`, lowest free first.
#[derive(Debug)]
pub struct Pool {
    capacity: u32,
    /// Never handed out yet: `next..capacity`.
    next: u32,
    free: Vec<u32>,
    waiting: VecDeque<(Instant, u32)>,
}

impl Pool {
    pub fn new(capacity: u32) -> Pool {
        Pool {
            capacity,
            next: 0,
            free: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// A pool of `capacity` whose indexes `used` are taken (a director adopted from its pins).
    pub fn with_used(capacity: u32, used: &std::collections::BTreeSet<u32>) -> Pool {
        let next = used.last().map_or(0, |m| m + 1).min(capacity);
        Pool {
            capacity,
            next,
            free: (0..next).rev().filter(|i| !used.contains(i)).collect(),
            waiting: VecDeque::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Places that can be handed out now.
    pub fn available(&self) -> usize {
        self.free.len() + (self.capacity - self.next) as usize
    }

    /// Places given up and still waiting out their grace.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        (self.next < self.capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Gives `i` up now; it is reused once its grace has passed.
    pub fn release(&mut self, i: u32, now: Instant) {
        self.waiting.push_back((now, i));
    }

    /// Takes `i` back at once: it was allocated but never published.
    pub fn unalloc(&mut self, i: u32) {
        self.free.push(i);
    }

    /// Makes places whose grace has passed by `now` available; returns them.
    pub fn reclaim(&mut self, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(&(at, i)) = self.waiting.front() {
            if now.duration_since(at) < GRACE {
                break;
            }
            self.waiting.pop_front();
            self.free.push(i);
            out.push(i);
        }
        out
    }
}

/// Contiguous ranges of `0..capacity` (each service's scheduling slots), first fit.
#[derive(Debug)]
pub struct Ranges {
    /// Free ranges: start -> length, never adjacent (merged on free).
    free: BTreeMap<u32, u32>,
    waiting: VecDeque<(Instant, u32, u32)>,
}

impl Ranges {
    pub fn new(capacity: u32) -> Ranges {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Ranges {
            free,
            waiting: VecDeque::new(),
        }
    }

    /// Ranges of `0..capacity` with `used` (start, length) taken.
    pub fn with_used(capacity: u32, used: &[(u32, u32)]) -> Ranges {
        let mut r = Ranges::new(capacity);
        for &(start, len) in used {
            if len == 0 {
                continue;
            }
            let Some((&s, &l)) = r.free.range(..=start).next_back() else {
                continue;
            };
            if s + l < start + len {
                continue;
            }
            r.free.remove(&s);
            if start > s {
                r.free.insert(s, start - s);
            }
            if s + l > start + len {
                r.free.insert(start + len, s + l - start - len);
            }
        }
        r
    }

    /// A range of `len` (0 is always granted, at 0).
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, &have) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        Some(start)
    }

    /// Extends the range `start..start + len` by `extra` in place, if the places after it are
    /// free.
    pub fn grow(&mut self, start: u32, len: u32, extra: u32) -> bool {
        if extra == 0 {
            return true;
        }
        let end = start + len;
        let Some(&free) = self.free.get(&end) else {
            return false;
        };
        if free < extra {
            return false;
        }
        self.free.remove(&end);
        if free > extra {
            self.free.insert(end + extra, free - extra);
        }
        true
    }

    /// Gives `start..start + len` up now, reused after its grace.
    pub fn release(&mut self, start: u32, len: u32, now: Instant) {
        if len > 0 {
            self.waiting.push_back((now, start, len));
        }
    }

    /// Takes a range back at once: it was allocated but never published.
    pub fn unalloc(&mut self, start: u32, len: u32) {
        self.insert_free(start, len);
    }

    /// Ranges given up and still waiting out their grace.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn reclaim(&mut self, now: Instant) {
        while let Some(&(at, start, len)) = self.waiting.front() {
            if now.duration_since(at) < GRACE {
                break;
            }
            self.waiting.pop_front();
            self.insert_free(start, len);
        }
    }

    fn insert_free(&mut self, mut start: u32, mut len: u32) {
        if len == 0 {
            return;
        }
        if let Some((&s, &l)) = self.free.range(..start).next_back()
            && s + l == start
        {
            self.free.remove(&s);
            start = s;
            len += l;
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_index_waits_out_its_grace() {
        let t0 = Instant::now();
        let mut p = Pool::new(2);
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(0), Some(1), None));
        p.release(0, t0);
        assert_eq!(p.alloc(), None);
        assert!(p.reclaim(t0 + GRACE / 2).is_empty());
        assert_eq!(p.reclaim(t0 + GRACE), vec![0]);
        assert_eq!(p.alloc(), Some(0));
        p.unalloc(0);
        assert_eq!(p.available(), 1);
    }

    #[test]
    fn adopted_places_stay_taken() {
        let mut p = Pool::with_used(5, &[1, 3].into());
        let got: Vec<u32> = std::iter::from_fn(|| p.alloc()).collect();
        assert_eq!(got, vec![0, 2, 4]);
        let mut r = Ranges::with_used(10, &[(2, 3), (7, 1)]);
        assert_eq!(r.alloc(3), None);
        let got: Vec<Option<u32>> = (0..4).map(|_| r.alloc(2)).collect();
        assert_eq!(got, vec![Some(0), Some(5), Some(8), None]);
    }

    #[test]
    fn ranges_are_first_fit_and_merge_when_freed() {
        let t0 = Instant::now();
        let mut r = Ranges::new(10);
        assert_eq!(r.alloc(4), Some(0));
        assert_eq!(r.alloc(4), Some(4));
        assert_eq!(r.alloc(3), None);
        assert_eq!(r.alloc(0), Some(0));
        r.release(0, 4, t0);
        r.release(4, 4, t0);
        assert_eq!(r.alloc(3), None, "not before the grace");
        r.reclaim(t0 + GRACE);
        assert_eq!(
            r.alloc(10),
            Some(0),
            "freed ranges merge with their neighbours"
        );
        r.unalloc(0, 10);
        assert_eq!(r.alloc(10), Some(0));
        r.unalloc(4, 6);
        assert!(r.grow(0, 4, 3), "the places after the range are free");
        assert!(!r.grow(0, 7, 4), "only 3 left");
        assert_eq!(r.alloc(3), Some(7));
    }
}

//! What becomes of a packet: an XDP action and the reason it is counted under
//! (`lvs_xdp_common::reason`). Every packet ends in exactly one.
use aya_ebpf::bindings::xdp_action;
use lvs_xdp_common::reason;

#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub reason: u32,
}

impl Verdict {
    /// Sent to its real server with XDP_TX (counted in the real server's counters).
    pub const FORWARDED: Verdict = Verdict {
        action: xdp_action::XDP_TX,
        reason: reason::FORWARDED,
    };

    /// Left to the host's stack, counted under `why`.
    #[inline(always)]
    pub const fn pass(why: u32) -> Verdict {
        Verdict {
            action: xdp_action::XDP_PASS,
            reason: why,
        }
    }
}

/// A packet to drop, and why: the error of the parsing and deciding steps, so that `?` ends a
/// packet's processing.
#[derive(Clone, Copy)]
pub struct Dropped(pub u32);

impl From<Dropped> for Verdict {
    #[inline(always)]
    fn from(d: Dropped) -> Verdict {
        Verdict {
            action: xdp_action::XDP_DROP,
            reason: d.0,
        }
    }
}

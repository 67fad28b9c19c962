//! The hops between stages: a latest-wins slot for live sources and a lossless hand-over
//! for files, behind one [`HopSender`] so that stage loops do not care which.
//!
//! [`LatestSlot`] is a crossbeam channel of capacity one whose producer, finding it full,
//! takes the stale item back out and puts the new one in: a queue never grows, so latency
//! cannot creep up, and every replaced item is counted as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};

/// How long a blocked hand-over waits before it looks at the stop flags again.
const SEND_POLL: Duration = Duration::from_millis(20);

/// The producer end of a one-slot, newest-wins channel; consumers use a plain [`Receiver`].
pub struct LatestSlot<T> {
    tx: Sender<T>,
    /// The producer's own handle on the slot, to take a stale item back out.
    stale: Receiver<T>,
    replaced: Arc<AtomicU64>,
}

impl<T> LatestSlot<T> {
    /// A slot and the receiver its consumer reads.
    pub fn new() -> (LatestSlot<T>, Receiver<T>) {
        let (tx, rx) = bounded(1);
        let slot = LatestSlot {
            tx,
            stale: rx.clone(),
            replaced: Arc::new(AtomicU64::new(0)),
        };
        (slot, rx)
    }

    /// Puts `item` in the slot; returns the waiting item it replaced (now dropped), if any.
    pub fn push(&self, item: T) -> Option<T> {
        let mut item = item;
        let mut replaced = None;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return replaced,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    // The consumer may take the stale item first; then the slot is free.
                    if let Ok(stale) = self.stale.try_recv() {
                        self.replaced.fetch_add(1, Ordering::Relaxed);
                        replaced = Some(stale);
                    }
                }
                // Unreachable while `stale` holds a receiver; keep the newest item.
                Err(TrySendError::Disconnected(_)) => return replaced,
            }
        }
    }

    /// Items replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Items waiting (0 or 1).
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

/// What happened to an item handed to the next stage.
#[derive(Debug)]
pub enum Handed<T> {
    Sent,
    /// Sent, and the waiting item it replaced is dropped.
    Replaced(T),
    /// Not sent: the run is stopping or the next stage is gone.
    Refused,
}

/// The sending end of a hop: latest-wins (live) or lossless with back-pressure (files).
pub enum HopSender<T> {
    Latest(LatestSlot<T>),
    Lossless(Sender<T>),
}

/// A hop of the given policy and its receiver.
pub fn hop<T>(lossless: bool) -> (HopSender<T>, Receiver<T>) {
    if lossless {
        // A rendezvous: the producer prepares the next item while the consumer works, then
        // waits to hand it over, so an item waits at most one consumer period.
        let (tx, rx) = bounded(0);
        (HopSender::Lossless(tx), rx)
    } else {
        let (slot, rx) = LatestSlot::new();
        (HopSender::Latest(slot), rx)
    }
}

impl<T> HopSender<T> {
    /// Hands `item` on; a lossless hop blocks until there is room, checking `give_up`
    /// every few milliseconds so that a stopping run never hangs here.
    pub fn send(&self, item: T, give_up: impl Fn() -> bool) -> Handed<T> {
        match self {
            HopSender::Latest(slot) => match slot.push(item) {
                Some(old) => Handed::Replaced(old),
                None => Handed::Sent,
            },
            HopSender::Lossless(tx) => {
                let mut item = item;
                loop {
                    match tx.send_timeout(item, SEND_POLL) {
                        Ok(()) => return Handed::Sent,
                        Err(SendTimeoutError::Timeout(back)) => {
                            if give_up() {
                                return Handed::Refused;
                            }
                            item = back;
                        }
                        Err(SendTimeoutError::Disconnected(_)) => return Handed::Refused,
                    }
                }
            }
        }
    }

    /// Items waiting in the hop.
    pub fn len(&self) -> usize {
        match self {
            HopSender::Latest(slot) => slot.len(),
            HopSender::Lossless(tx) => tx.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_item_wins_and_replaced_ones_are_counted() {
        let (slot, rx) = LatestSlot::new();
        assert!(slot.push(1).is_none());
        assert_eq!(slot.push(2), Some(1));
        assert_eq!(slot.push(3), Some(2));
        assert_eq!(slot.len(), 1);
        assert_eq!(rx.try_recv(), Ok(3));
        assert!(slot.push(4).is_none());
        assert_eq!(slot.replaced(), 2);
        drop(slot);
        assert_eq!(rx.recv(), Ok(4));
        assert!(
            rx.recv().is_err(),
            "dropping the slot disconnects its receiver"
        );
    }

    #[test]
    fn racing_consumer_never_sees_more_than_one_waiting_item() {
        let (slot, rx) = LatestSlot::new();
        let consumer = std::thread::spawn(move || {
            let mut last = None;
            let mut received = 0u64;
            while let Ok(v) = rx.recv() {
                if let Some(prev) = last {
                    assert!(v > prev, "items arrive in order");
                }
                last = Some(v);
                received += 1;
            }
            received
        });
        let mut max_len = 0;
        for i in 0..20_000u64 {
            slot.push(i);
            max_len = max_len.max(slot.len());
        }
        let replaced = slot.replaced();
        drop(slot);
        let received = consumer.join().unwrap();
        assert!(max_len <= 1);
        assert_eq!(
            received + replaced,
            20_000,
            "every item is received or counted"
        );
    }

    #[test]
    fn lossless_hop_gives_up_when_told() {
        let (tx, rx) = hop::<u32>(true);
        let consumer = std::thread::spawn(move || rx.recv().unwrap());
        assert!(matches!(tx.send(1, || false), Handed::Sent));
        assert_eq!(consumer.join().unwrap(), 1);
        assert!(matches!(tx.send(2, || true), Handed::Refused));
    }
}

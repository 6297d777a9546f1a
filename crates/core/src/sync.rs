//! The synchronization primitives of fanout-core, swapped for loom's under `--cfg loom` so that
//! the models in `plumbing::loom_models` explore every interleaving of the code that uses them.

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, Ordering};

/// The channel that carries answers back to an engine: crossbeam's, or loom's under loom.
pub(crate) mod channel {
    #[cfg(not(loom))]
    pub(crate) use crossbeam_channel::{Receiver, Sender, unbounded};

    #[cfg(loom)]
    pub(crate) use loom_channel::{Receiver, Sender, unbounded};

    #[cfg(loom)]
    mod loom_channel {
        //! crossbeam's API over loom's `mpsc`, just the calls the engine makes.
        //!
        //! Like crossbeam's, a send fails once the receiver is gone. Loom's `mpsc` would take
        //! the message and then report it leaked at the end of the model, so a gate (a loom
        //! `Mutex`, so that loom explores it too) makes "send unless closed" and "close and
        //! drain" atomic with each other.

        use std::sync::Arc;

        use loom::sync::Mutex;

        pub(crate) struct Sender<T> {
            sender: loom::sync::mpsc::Sender<T>,
            /// `true` while the receiver lives.
            open: Arc<Mutex<bool>>,
        }

        pub(crate) struct Receiver<T> {
            receiver: loom::sync::mpsc::Receiver<T>,
            open: Arc<Mutex<bool>>,
        }

        pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
            let (sender, receiver) = loom::sync::mpsc::channel();
            let open = Arc::new(Mutex::new(true));
            (Sender { sender, open: Arc::clone(&open) }, Receiver { receiver, open })
        }

        impl<T> Clone for Sender<T> {
            fn clone(&self) -> Self {
                Self { sender: self.sender.clone(), open: Arc::clone(&self.open) }
            }
        }

        impl<T> Sender<T> {
            pub(crate) fn send(&self, value: T) -> Result<(), T> {
                let open = self.open.lock().unwrap();
                if !*open {
                    return Err(value);
                }
                self.sender.send(value).map_err(|error| error.0)
            }
        }

        impl<T> Receiver<T> {
            pub(crate) fn recv(&self) -> Result<T, ()> {
                self.receiver.recv().map_err(|_| ())
            }

            pub(crate) fn try_recv(&self) -> Result<T, ()> {
                self.receiver.try_recv().map_err(|_| ())
            }
        }

        impl<T> Drop for Receiver<T> {
            fn drop(&mut self) {
                let mut open = self.open.lock().unwrap();
                *open = false;
                while self.receiver.try_recv().is_ok() {}
            }
        }
    }
}

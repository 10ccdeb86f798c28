//! The device event loop: one thread waiting on eventfds and host file
//! descriptors with epoll (no polling), handing each ready source to its
//! handler: console input for the UART, virtio queue notifications
//! (ioeventfds) and the vsock device's own epoll of its host sockets.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// What a handler tells the loop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Keep watching the source.
    Keep,
    /// Stop watching it (EOF, error).
    Drop,
}

/// A source of events and what to do when it is ready.
pub(crate) struct Source {
    /// The fd to wait on (readable).
    pub(crate) fd: RawFd,
    /// Called when `fd` is readable or hung up.
    pub(crate) handler: Box<dyn FnMut() -> Interest + Send>,
}

/// A running event loop; dropping it stops and joins the thread.
pub(crate) struct EventLoop {
    exit: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts a thread that serves `sources` until the loop is dropped.
    pub(crate) fn start(
        sources: Vec<Source>,
        seccomp: crate::seccomp::SeccompMode,
    ) -> std::io::Result<Self> {
        let exit = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let exit_token = u64::MAX;
        epoll.ctl(
            ControlOperation::Add,
            exit.as_raw_fd(),
            EpollEvent::new(EventSet::IN, exit_token),
        )?;
        for (token, source) in sources.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                source.fd,
                EpollEvent::new(EventSet::IN, token as u64),
            )?;
        }
        let thread = std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || {
                // Confined before it serves anything a guest wrote.
                if let Err(e) =
                    crate::seccomp::install(crate::seccomp::ThreadKind::Devices, seccomp)
                {
                    log::error!("device thread: {}", crate::error::error_chain(&e));
                    return;
                }
                serve(epoll, sources, exit_token)
            })?;
        Ok(EventLoop {
            exit,
            thread: Some(thread),
        })
    }
}

fn serve(epoll: Epoll, mut sources: Vec<Source>, exit_token: u64) {
    let mut events = vec![EpollEvent::default(); sources.len() + 1];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("device event loop: epoll_wait failed: {e}");
                return;
            }
        };
        for event in &events[..ready] {
            let token = event.data();
            if token == exit_token {
                return;
            }
            let Some(source) = sources.get_mut(token as usize) else {
                continue;
            };
            if (source.handler)() == Interest::Drop {
                let _ = epoll.ctl(ControlOperation::Delete, source.fd, EpollEvent::default());
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if self.exit.write(1).is_err() {
            log::error!("cannot stop the device event loop");
            return;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_ready_source_reaches_its_handler_and_drop_stops_the_loop() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ours = fd.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let source = Source {
            fd: fd.as_raw_fd(),
            handler: Box::new(move || {
                let value = ours.read().unwrap_or(0);
                tx.send(value).unwrap();
                Interest::Keep
            }),
        };
        let event_loop = EventLoop::start(vec![source], crate::seccomp::SeccompMode::Off).unwrap();
        fd.write(5).unwrap();
        assert_eq!(rx.recv().unwrap(), 5);
        drop(event_loop);
    }
}

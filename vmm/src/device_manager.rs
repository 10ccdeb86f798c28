//! Places the devices of one VM on its buses and wires their interrupts:
//! the 16550 UART on COM1 (output to the console sink, input from stdin,
//! IRQ 4 through an irqfd), QEMU's debug-exit port, the userspace IOAPIC of
//! the split irqchip on the MMIO bus, and on confidential guests the memory
//! probe, which reaches guest memory only through the VM's device-memory
//! handle.

use crate::backend::{BackendError, Vm};
use crate::config::{SerialOutput, VmConfig};
use crate::devices::bus::{Bus, BusError};
use crate::devices::debug_exit::DebugExit;
use crate::devices::probe::MemoryProbe;
use crate::devices::serial::{ConsoleWriter, SerialPort, COM1, COM1_IRQ};
use crate::event_loop::{EventLoop, Interest, Source};
use crate::iommu::VirtualIommu;
use crate::run_control::RunControl;
use crate::sync::lock;
use crate::virtio::balloon::BalloonState;
use crate::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use thiserror::Error;
use umbra_firmware::layout::{DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, PROBE_PORT, VIRTIO_MMIO_SLOT};
use vmm_sys_util::eventfd::EventFd;

/// Errors while attaching devices.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The serial output file could not be opened.
    #[error("cannot open serial output {path}")]
    OpenSerial {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An eventfd or the event loop could not be created.
    #[error("cannot set up {0}")]
    HostSetup(&'static str, #[source] std::io::Error),
    /// Two devices claim the same addresses (a bug in the device layout).
    #[error("cannot place {device}")]
    PlaceDevice {
        /// The device.
        device: &'static str,
        /// The bus's refusal.
        #[source]
        source: BusError,
    },
    /// The hypervisor refused an interrupt or notification setup.
    #[error("cannot wire {device}'s interrupt")]
    WireInterrupt {
        /// The device.
        device: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The platform offers devices no memory they could reach (hardware
    /// SEV and SNP, whose page states umbra does not track for devices).
    #[error("virtio devices are not supported on --platform {0} yet")]
    DeviceMemory(&'static str),
    /// More transports than slots.
    #[error("{0} virtio devices asked for; umbra has {max} slots", max = crate::virtio::VIRTIO_MMIO_MAX)]
    CountTransports(usize),
    /// A disk image could not be opened.
    #[error("cannot attach --disk")]
    OpenDisk(#[from] crate::virtio::block::BlockError),
    /// The vsock socket could not be set up.
    #[error("cannot attach --vsock")]
    OpenVsock(#[from] crate::virtio::vsock::VsockError),
    /// A virtio transport or its notifications could not be set up.
    #[error("cannot set up {name}")]
    SetupVirtio {
        /// The device.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor refused a virtio device's interrupt or notification.
    #[error("cannot wire {name}")]
    WireVirtio {
        /// The device.
        name: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
}

/// The devices of a running VM.
pub(crate) struct Devices {
    /// Port-I/O bus.
    pub(crate) pio: Bus,
    /// MMIO bus.
    pub(crate) mmio: Bus,
    /// When the first console byte went out.
    pub(crate) first_serial_byte: Arc<OnceLock<Instant>>,
    /// The device event loop (console input, virtio queues); stops when
    /// dropped.
    pub(crate) event_loop: Option<EventLoop>,
    /// The virtio transports, for their metrics.
    pub(crate) virtio: Vec<Arc<Mutex<MmioTransport>>>,
    /// The virtio-iommu's state, for its metrics.
    pub(crate) iommu: Option<Arc<VirtualIommu>>,
    /// The balloon's figures and its transport (the API changes its target).
    pub(crate) balloon: Option<(Arc<BalloonState>, SharedTransport)>,
}

/// Per-device counters of `transports` for the metrics.
pub(crate) fn metrics(
    transports: &[Arc<Mutex<MmioTransport>>],
) -> Vec<crate::metrics::DeviceMetrics> {
    transports
        .iter()
        .map(|t| {
            let t = lock(t);
            t.counters().snapshot(t.name(), t.kind())
        })
        .collect()
}

/// A transport as the bus, the event loop and the metrics share it.
pub(crate) type SharedTransport = Arc<Mutex<MmioTransport>>;

/// Creates the device model `transport` names.
fn virtio_device(
    config: &VmConfig,
    transport: &crate::virtio::Transport,
    iommu: Option<&Arc<VirtualIommu>>,
    balloon: Option<&Arc<BalloonState>>,
) -> Result<Box<dyn crate::virtio::VirtioDevice>, DeviceError> {
    use crate::virtio::Kind;
    Ok(match transport.kind {
        Kind::Block(n) => {
            let disk = &config.disks[n];
            Box::new(crate::virtio::block::Block::open(
                &disk.path,
                disk.read_only,
                disk.direct,
            )?)
        }
        Kind::Rng => Box::new(crate::virtio::rng::Rng),
        Kind::Vsock => {
            let vsock = config.vsock.as_ref().ok_or(DeviceError::SetupVirtio {
                name: transport.name.clone(),
                source: std::io::Error::other("no --vsock configuration"),
            })?;
            Box::new(crate::virtio::vsock::Vsock::new(vsock.cid, &vsock.socket)?)
        }
        Kind::Balloon => match balloon {
            Some(state) => Box::new(crate::virtio::balloon::Balloon::new(state.clone())),
            None => {
                return Err(DeviceError::SetupVirtio {
                    name: transport.name.clone(),
                    source: std::io::Error::other("no balloon state"),
                })
            }
        },
        Kind::Iommu => match iommu {
            Some(iommu) => Box::new(crate::virtio::iommu::VirtioIommu::new(iommu.clone())),
            None => {
                return Err(DeviceError::SetupVirtio {
                    name: transport.name.clone(),
                    source: std::io::Error::other("no IOMMU state"),
                })
            }
        },
    })
}

/// Places the virtio transports `config` asks for on the MMIO bus, wires
/// their interrupts and notifications, and returns the event-loop sources
/// that serve their queues.
fn attach_virtio<V: Vm + 'static>(
    vm: &Arc<V>,
    config: &VmConfig,
    mmio: &mut Bus,
) -> Result<VirtioDevices, DeviceError> {
    let layout = crate::virtio::transports(config);
    if layout.is_empty() {
        return Ok(VirtioDevices::default());
    }
    if layout.len() > crate::virtio::VIRTIO_MMIO_MAX {
        return Err(DeviceError::CountTransports(layout.len()));
    }
    let memory = vm
        .device_memory()
        .ok_or(DeviceError::DeviceMemory(config.platform.name()))?;
    let iommu = if config.iommu {
        let endpoints = (0u32..)
            .zip(&layout)
            .filter(|(_, t)| t.behind_iommu)
            .map(|(i, _)| i);
        let iommu = VirtualIommu::new(endpoints).map_err(|source| DeviceError::SetupVirtio {
            name: "iommu0".into(),
            source,
        })?;
        Some(Arc::new(iommu))
    } else {
        None
    };
    let balloon_state = config.balloon.map(BalloonState::new);
    let mut balloon = None;
    let mut transports = Vec::new();
    let mut sources = Vec::new();
    for (endpoint, slot) in (0u32..).zip(&layout) {
        let setup = |source| DeviceError::SetupVirtio {
            name: slot.name.clone(),
            source,
        };
        let wire = |source| DeviceError::WireVirtio {
            name: slot.name.clone(),
            source,
        };
        let device = virtio_device(config, slot, iommu.as_ref(), balloon_state.as_ref())?;
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(setup)?;
        let device_memory = match (&iommu, slot.behind_iommu) {
            (Some(iommu), true) => memory.behind_iommu(endpoint, iommu.clone()),
            _ => memory.clone(),
        };
        let transport = MmioTransport::new(
            device,
            slot.name.clone(),
            device_memory,
            config.platform.is_confidential(),
            irq,
        )
        .map_err(setup)?;
        vm.register_irqfd(transport.irq(), slot.gsi).map_err(wire)?;
        let mut notify = Vec::new();
        for (queue, fd) in transport.notify_fds().iter().enumerate() {
            vm.register_ioevent(
                fd,
                crate::backend::IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET),
                Some(queue as u32),
            )
            .map_err(wire)?;
            notify.push(fd.try_clone().map_err(setup)?);
        }
        let host_fd = transport.host_fd();
        let transport = Arc::new(Mutex::new(transport));
        if let Some(fd) = host_fd {
            let served = transport.clone();
            sources.push(Source {
                fd,
                handler: Box::new(move || {
                    lock(&served).serve_host();
                    Interest::Keep
                }),
            });
        }
        for (queue, fd) in notify.into_iter().enumerate() {
            let served = transport.clone();
            sources.push(Source {
                fd: fd.as_raw_fd(),
                handler: Box::new(move || {
                    // The eventfd counts notifications; one pass over the
                    // queue serves them all.
                    let _ = fd.read();
                    lock(&served).serve_queue(queue);
                    Interest::Keep
                }),
            });
        }
        place(
            mmio,
            slot.base,
            VIRTIO_MMIO_SLOT,
            transport.clone(),
            "a virtio-mmio transport",
        )?;
        if slot.kind == crate::virtio::Kind::Balloon {
            balloon = balloon_state.clone().map(|s| (s, transport.clone()));
        }
        transports.push(transport);
    }
    Ok(VirtioDevices {
        transports,
        sources,
        iommu,
        balloon,
    })
}

/// The virtio side of a VM.
#[derive(Default)]
struct VirtioDevices {
    transports: Vec<SharedTransport>,
    sources: Vec<Source>,
    iommu: Option<Arc<VirtualIommu>>,
    balloon: Option<(Arc<BalloonState>, SharedTransport)>,
}

fn place(
    bus: &mut Bus,
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn crate::devices::bus::BusDevice>>,
    name: &'static str,
) -> Result<(), DeviceError> {
    bus.insert(base, len, device)
        .map_err(|source| DeviceError::PlaceDevice {
            device: name,
            source,
        })
}

/// Stdin, unbuffered, when it is something a console reads from: a
/// terminal or a pipe (not /dev/null or a regular file, whose "input" would
/// be noise or EOF). A duplicate of the descriptor, so the event loop owns
/// what it reads from; unbuffered, so epoll's readiness is the whole truth.
fn console_input() -> Option<std::fs::File> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned().ok()?);
    let fifo = file.metadata().is_ok_and(|m| m.file_type().is_fifo());
    (stdin.is_terminal() || fifo).then_some(file)
}

/// Attaches the devices of `config` to `vm`. `interrupts` says whether the
/// VM has the split irqchip, whose userspace IOAPIC routes the GSIs that
/// irqfds raise.
pub(crate) fn attach<V: Vm + 'static>(
    vm: &Arc<V>,
    config: &VmConfig,
    control: &Arc<RunControl>,
    interrupts: bool,
) -> Result<Devices, DeviceError> {
    let mut pio = Bus::default();
    let mut mmio = Bus::default();
    let first_serial_byte = Arc::new(OnceLock::new());
    let serial_out: Box<dyn std::io::Write + Send> =
        match &config.serial {
            SerialOutput::Stdout => Box::new(std::io::stdout()),
            SerialOutput::Null => Box::new(std::io::sink()),
            SerialOutput::File(path) => Box::new(std::fs::File::create(path).map_err(
                |source| DeviceError::OpenSerial {
                    path: path.clone(),
                    source,
                },
            )?),
        };
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK)
        .map_err(|e| DeviceError::HostSetup("the serial interrupt eventfd", e))?;
    if interrupts {
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(|source| DeviceError::WireInterrupt {
                device: "the UART",
                source,
            })?;
        crate::interrupts::attach_ioapic(vm, &mut mmio).map_err(|source| {
            DeviceError::PlaceDevice {
                device: "the IOAPIC",
                source,
            }
        })?;
    }
    let serial = Arc::new(Mutex::new(SerialPort::new(
        serial_irq,
        ConsoleWriter::new(serial_out, first_serial_byte.clone()),
    )));
    place(&mut pio, u64::from(COM1), 8, serial.clone(), "the UART")?;
    place(
        &mut pio,
        u64::from(DEBUG_EXIT_PORT),
        u64::from(DEBUG_EXIT_SIZE),
        Arc::new(Mutex::new(DebugExit::new(control.clone()))),
        "the debug-exit port",
    )?;
    if config.platform.is_confidential() {
        if let Some(memory) = vm.device_memory() {
            let probe = Arc::new(Mutex::new(MemoryProbe::new(memory)));
            place(
                &mut pio,
                u64::from(PROBE_PORT),
                8,
                probe,
                "the memory probe",
            )?;
        }
    }
    let VirtioDevices {
        transports: virtio,
        mut sources,
        iommu,
        balloon,
    } = attach_virtio(vm, config, &mut mmio)?;
    if let Some(mut input) = console_input() {
        let console = serial.clone();
        sources.push(Source {
            fd: input.as_raw_fd(),
            handler: Box::new(move || {
                let mut buf = [0u8; 64];
                // epoll reported the descriptor readable: this read returns
                // at once (EOF or an error ends the watch).
                match std::io::Read::read(&mut input, &mut buf) {
                    Ok(0) | Err(_) => Interest::Drop,
                    Ok(n) => {
                        lock(&console).enqueue_input(&buf[..n]);
                        Interest::Keep
                    }
                }
            }),
        });
    }
    let event_loop = if sources.is_empty() {
        None
    } else {
        Some(
            EventLoop::start(sources, config.seccomp)
                .map_err(|e| DeviceError::HostSetup("the device event loop", e))?,
        )
    };
    Ok(Devices {
        pio,
        mmio,
        first_serial_byte,
        event_loop,
        virtio,
        iommu,
        balloon,
    })
}

//! [`DpdkPort`]: the [`Port`] over one rx/tx queue pair of a DPDK ethdev.

use std::ffi::{CStr, CString};
use std::sync::Arc;

use ukcm_dpdk_sys as sys;

use super::mbuf::{self, MbufRelease, Mempool, PoolLayout};
use super::{DpdkError, Eal};
use crate::pool::{Frame, FramePool, FrameRelease, PoolConfig, PoolError};
use crate::port::{CopyMode, Port, PortCaps, PortError, PortStats};
use crate::region::{HugePolicy, PinnedBudget};

/// Largest burst handed to `rte_eth_rx_burst` / `rte_eth_tx_burst` per call.
const MAX_BURST: usize = 32;

/// How to open a DPDK device.
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// The ethdev's name (a vdev's name, e.g. `net_af_packet0`, or a PCI address);
    /// `None`: the first port the EAL probed.
    pub device: Option<String>,
    /// Rx/tx queue pairs, one [`DpdkPort`] (one engine) each.
    pub queues: u16,
    /// Rx descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Tx descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// Mbufs in each queue's mempool.
    pub mbufs: u32,
    /// Turn promiscuous mode on while the device is open (restored on close).
    pub promiscuous: bool,
    /// The pool smoltcp writes transmit frames into (copied into mbufs on send).
    pub tx_pool: PoolConfig,
    /// Page policy of that pool's pinned memory.
    pub huge: HugePolicy,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            device: None,
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 8191,
            promiscuous: false,
            tx_pool: PoolConfig { frame_size: 2048, headroom: 128, frames: 4096 },
            huge: HugePolicy::Prefer,
        }
    }
}

/// The ethdev's counters (device-wide, all queues).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Received packets the device dropped (rings full).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Receives that failed for lack of mbufs.
    pub rx_nombuf: u64,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The configured, started ethdev; stopped and closed when the last queue's port drops.
#[derive(Debug)]
struct Device {
    id: u16,
    name: String,
    driver: String,
    queues: u16,
    promisc_before: Option<bool>,
    // Dropped after `drop` closed the device (the driver has returned its mbufs by then).
    _pools: Vec<Arc<Mempool>>,
    _eal: Eal,
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the device was configured and started by `DpdkPort::open_all`; no port
        // uses it any more (each held an Arc to this).
        let rc = unsafe { sys::rte_eth_dev_stop(self.id) };
        if rc != 0 {
            tracing::warn!(device = %self.name, rc, "rte_eth_dev_stop failed");
        }
        if let Some(was) = self.promisc_before {
            // SAFETY: a valid port id; restoring the flag we found.
            unsafe {
                if was {
                    sys::rte_eth_promiscuous_enable(self.id);
                } else {
                    sys::rte_eth_promiscuous_disable(self.id);
                }
            }
        }
        // SAFETY: stopped above; close frees the queues (their mbufs go back to `pools`).
        let rc = unsafe { sys::rte_eth_dev_close(self.id) };
        if rc != 0 {
            tracing::warn!(device = %self.name, rc, "rte_eth_dev_close failed");
        }
    }
}

/// One rx/tx queue pair of a DPDK ethdev as a [`Port`].
pub struct DpdkPort {
    dev: Arc<Device>,
    queue: u16,
    mempool: Arc<Mempool>,
    release: Arc<dyn FrameRelease>,
    tx_pool: FramePool,
    mtu: usize,
    mac: [u8; 6],
    stats: PortStats,
    tx_copies: u64,
    tx_oversized: u64,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort").field("device", &self.dev.name).field("queue", &self.queue).finish_non_exhaustive()
    }
}

fn call(op: &'static str, rc: i32) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError::Call { op, rc })
    } else {
        Ok(())
    }
}

fn find_device(wanted: Option<&str>) -> Result<u16, DpdkError> {
    match wanted {
        Some(name) => {
            let c = CString::new(name).map_err(|_| DpdkError::NoSuchPort(format!("{name:?}")))?;
            let mut id = 0u16;
            // SAFETY: c is a valid name and id a valid out pointer.
            let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
            if rc != 0 {
                return Err(DpdkError::NoSuchPort(format!("{name:?} (probed: {})", probed_names().join(", "))));
            }
            Ok(id)
        }
        None => {
            // SAFETY: a plain query over the EAL's port table.
            let id = unsafe { sys::rte_eth_find_next_owned_by(0, sys::RTE_ETH_DEV_NO_OWNER as u64) };
            if id >= sys::RTE_MAX_ETHPORTS as u64 {
                return Err(DpdkError::NoSuchPort("(none probed: give the EAL a --vdev or a PCI device)".into()));
            }
            Ok(id as u16)
        }
    }
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as std::ffi::c_char; 64];
    // SAFETY: buf holds RTE_ETH_NAME_MAX_LEN (64) bytes.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: DPDK wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn probed_names() -> Vec<String> {
    let mut out = Vec::new();
    let mut id = 0u64;
    loop {
        // SAFETY: a plain query over the EAL's port table.
        id = unsafe { sys::rte_eth_find_next_owned_by(id as u16, sys::RTE_ETH_DEV_NO_OWNER as u64) };
        if id >= sys::RTE_MAX_ETHPORTS as u64 {
            break;
        }
        out.push(port_name(id as u16));
        id += 1;
    }
    out
}

impl DpdkPort {
    /// Opens a device with one queue pair; see [`DpdkPort::open_all`].
    pub fn open(eal: &Eal, cfg: &DpdkConfig, budget: &Arc<PinnedBudget>) -> Result<DpdkPort, DpdkError> {
        if cfg.queues != 1 {
            return Err(DpdkError::Unsupported("DpdkPort::open opens one queue; use open_all".into()));
        }
        Ok(Self::open_all(eal, cfg, budget)?.pop().expect("one queue"))
    }

    /// Configures `cfg.queues` rx/tx queue pairs of the device, each with a mempool of its
    /// own, starts it and returns one port per queue.
    pub fn open_all(eal: &Eal, cfg: &DpdkConfig, budget: &Arc<PinnedBudget>) -> Result<Vec<DpdkPort>, DpdkError> {
        let id = find_device(cfg.device.as_deref())?;
        let name = port_name(id);
        // SAFETY: dev_info is plain data (zeroed is valid) and id a valid port.
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above; info is a valid out pointer.
        call("rte_eth_dev_info_get", unsafe { sys::rte_eth_dev_info_get(id, &mut info) })?;
        let driver = if info.driver_name.is_null() {
            "?".to_owned()
        } else {
            // SAFETY: the driver name is a static NUL-terminated string of the PMD.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        if cfg.queues == 0 || cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
            return Err(DpdkError::Unsupported(format!(
                "{} queues asked, {name} ({driver}) has {} rx and {} tx",
                cfg.queues, info.max_rx_queues, info.max_tx_queues
            )));
        }
        // SAFETY: a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { sys::SOCKET_ID_ANY } else { socket };
        let conf = sys::rte_eth_conf::default();
        // SAFETY: a valid port, queue counts in range, conf a valid (all-default) config.
        call("rte_eth_dev_configure", unsafe { sys::rte_eth_dev_configure(id, cfg.queues, cfg.queues, &conf) })?;
        let (mut nb_rx, mut nb_tx) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port and out pointers.
        call("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rx, &mut nb_tx)
        })?;
        let mut pools = Vec::with_capacity(cfg.queues as usize);
        let data_room = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
        // net_af_xdp (DPDK 22.11) registers the mempool as UMEM assuming objects packed edge
        // to edge; the default layout on 4 KiB pages is not (see `PoolLayout::Paged`), and
        // the mbufs past the registered bytes were silently dropped by the kernel as invalid
        // descriptors: bulk TCP stalled with an 8191-mbuf pool.
        let af_xdp = driver.starts_with("net_af_xdp");
        let layout = if af_xdp { PoolLayout::Paged } else { PoolLayout::Default };
        for q in 0..cfg.queues {
            let mp = Mempool::new(eal, &format!("{id}q{q}"), cfg.mbufs, data_room, socket, layout)?;
            if af_xdp {
                let (span, registered) = mp.umem_fit();
                if span > registered {
                    return Err(DpdkError::Unsupported(format!(
                        "{name}: the mbuf pool spans {span} bytes but net_af_xdp registers only {registered} as UMEM; mbufs past that would be dropped by the kernel as invalid descriptors"
                    )));
                }
            }
            // SAFETY: configured port, queue in range, a live mempool; NULL conf = defaults.
            call("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(id, q, nb_rx, socket as u32, std::ptr::null(), mp.as_ptr())
            })?;
            // SAFETY: as above.
            call("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(id, q, nb_tx, socket as u32, std::ptr::null())
            })?;
            pools.push(mp);
        }
        // SAFETY: a valid port id.
        let promisc = unsafe { sys::rte_eth_promiscuous_get(id) };
        // SAFETY: configured with all queues set up.
        call("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(id) })?;
        let mut dev = Device {
            id,
            name: name.clone(),
            driver,
            queues: cfg.queues,
            promisc_before: None,
            _pools: pools.clone(),
            _eal: eal.clone(),
        };
        if cfg.promiscuous && promisc == 0 {
            // SAFETY: a started port.
            call("rte_eth_promiscuous_enable", unsafe { sys::rte_eth_promiscuous_enable(id) })?;
            dev.promisc_before = Some(false);
        }
        let mut mtu = 1500u16;
        // SAFETY: valid port and out pointer.
        call("rte_eth_dev_get_mtu", unsafe { sys::rte_eth_dev_get_mtu(id, &mut mtu) })?;
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid port and out pointer.
        call("rte_eth_macaddr_get", unsafe { sys::rte_eth_macaddr_get(id, &mut mac) })?;
        let dev = Arc::new(dev);
        let mut ports = Vec::with_capacity(cfg.queues as usize);
        for (q, mp) in pools.into_iter().enumerate() {
            let tx_pool = FramePool::with_region(cfg.tx_pool, budget, cfg.huge)
                .map_err(|e| DpdkError::Unsupported(format!("tx frame pool: {e}")))?;
            ports.push(DpdkPort {
                dev: dev.clone(),
                queue: q as u16,
                release: MbufRelease::shared(mp.clone()),
                mempool: mp,
                tx_pool,
                mtu: mtu as usize,
                mac: mac.addr_bytes,
                stats: PortStats::default(),
                tx_copies: 0,
                tx_oversized: 0,
            });
        }
        tracing::info!(device = %name, driver = %dev.driver, queues = cfg.queues, nb_rx, nb_tx, "DPDK device started");
        Ok(ports)
    }

    /// The ethdev's port id.
    pub fn port_id(&self) -> u16 {
        self.dev.id
    }

    /// The ethdev's name (e.g. `net_af_packet0`).
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The poll-mode driver's name (e.g. `net_af_packet`).
    pub fn driver(&self) -> &str {
        &self.dev.driver
    }

    /// Frames sent by copying a pool frame into an mbuf.
    pub fn tx_copies(&self) -> u64 {
        self.tx_copies
    }

    /// Mbufs free in this queue's mempool / its size (a leak shows as a shortfall).
    pub fn mbufs_free(&self) -> (u32, u32) {
        (self.mempool.available(), self.mempool.size())
    }

    /// The device's counters (all queues).
    pub fn eth_stats(&self) -> Result<EthStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port and out pointer.
        call("rte_eth_stats_get", unsafe { sys::rte_eth_stats_get(self.dev.id, &mut s) })?;
        Ok(EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The link state, without waiting.
    pub fn link(&self) -> Result<LinkInfo, DpdkError> {
        let (mut speed, mut up, mut fd) = (0u32, 0i32, 0i32);
        // SAFETY: valid port and out pointers.
        call("rte_eth_link_get_nowait", unsafe { sys::ukcm_link(self.dev.id, &mut speed, &mut up, &mut fd) })?;
        Ok(LinkInfo { up: up != 0, speed_mbps: speed, full_duplex: fd != 0 })
    }

    /// Copies a pool (or foreign) frame into a fresh mbuf; `Ok(None)` when the mempool is empty.
    fn copy_to_mbuf(&mut self, f: &Frame) -> Result<Option<*mut sys::rte_mbuf>, PoolError> {
        // SAFETY: a live mempool.
        let m = unsafe { sys::ukcm_pktmbuf_alloc(self.mempool.as_ptr()) };
        if m.is_null() {
            return Ok(None);
        }
        let v = mbuf::view(m);
        let room = v.buf_len as usize - v.data_off as usize;
        if f.len() > room {
            // SAFETY: we own m.
            unsafe { sys::ukcm_pktmbuf_free(m) };
            self.tx_oversized += 1;
            return Err(PoolError::TooLong { len: f.len(), capacity: room });
        }
        // SAFETY: the mbuf's buffer has `room` bytes from data_off, f.len() <= room; the
        // two buffers are distinct allocations.
        unsafe {
            std::ptr::copy_nonoverlapping(f.as_ptr(), v.buf.cast::<u8>().add(v.data_off as usize), f.len());
            sys::ukcm_mbuf_set_data(m, v.data_off, f.len() as u16);
        }
        Ok(Some(m))
    }

    /// One `rte_eth_tx_burst` over up to MAX_BURST frames from the front of `frames`.
    fn tx_chunk(&mut self, frames: &mut Vec<Frame>) -> Result<(usize, bool), PortError> {
        let n = frames.len().min(MAX_BURST);
        let mut mbufs = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        let mut copied = [false; MAX_BURST];
        let mut ready = 0;
        let mut err = None;
        for (i, f) in frames[..n].iter().enumerate() {
            if f.is_external_of(&self.release) {
                let m = f.id() as usize as *mut sys::rte_mbuf;
                // SAFETY: the frame owns this mbuf (it came from our mempool); the window
                // is within its buffer (Frame's invariant).
                let rc = unsafe { sys::ukcm_mbuf_set_data(m, f.data_offset() as u16, f.len() as u16) };
                debug_assert_eq!(rc, 0);
                mbufs[i] = m;
            } else {
                match self.copy_to_mbuf(f) {
                    Ok(Some(m)) => {
                        mbufs[i] = m;
                        copied[i] = true;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            ready = i + 1;
        }
        let sent = if ready == 0 {
            0
        } else {
            // SAFETY: mbufs[..ready] are valid mbufs; the driver takes ownership of the
            // first `sent` of them.
            unsafe { sys::ukcm_tx_burst(self.dev.id, self.queue, mbufs.as_mut_ptr(), ready as u16) as usize }
        };
        for i in sent..ready {
            if copied[i] {
                // SAFETY: an mbuf we allocated that the driver did not take.
                unsafe { sys::ukcm_pktmbuf_free(mbufs[i]) };
            }
        }
        let mut bytes = 0u64;
        for f in frames.drain(..sent) {
            bytes += f.len() as u64;
            // An mbuf frame's mbuf now belongs to the driver: forget it without freeing.
            // A pool frame was copied: dropping it returns it to its pool.
            if let Err(f) = f.into_external(&self.release) {
                drop(f);
            }
        }
        self.tx_copies += copied[..sent].iter().filter(|c| **c).count() as u64;
        self.stats.tx_frames += sent as u64;
        self.stats.tx_bytes += bytes;
        if let Some(e) = err {
            if sent == 0 {
                return Err(PortError::Pool(e));
            }
        }
        Ok((sent, sent == n && n == MAX_BURST))
    }
}

impl Port for DpdkPort {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, PortError> {
        let n = max.min(MAX_BURST);
        if n == 0 {
            return Ok(0);
        }
        let mut mbufs = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        // SAFETY: a started port and queue; mbufs has room for n pointers.
        let got = unsafe { sys::ukcm_rx_burst(self.dev.id, self.queue, mbufs.as_mut_ptr(), n as u16) } as usize;
        let mut taken = 0;
        for &m in &mbufs[..got] {
            // SAFETY: the driver just handed us m, from this queue's mempool (the release's).
            match unsafe { mbuf::frame_from_mbuf(m, &self.release) } {
                Some(f) => {
                    self.stats.rx_bytes += f.len() as u64;
                    out.push(f);
                    taken += 1;
                }
                None => {
                    self.stats.rx_dropped += 1;
                    self.stats.rx_invalid += 1;
                }
            }
        }
        self.stats.rx_frames += taken as u64;
        Ok(taken)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> Result<usize, PortError> {
        let mut total = 0;
        while !frames.is_empty() {
            let (sent, more) = self.tx_chunk(frames)?;
            total += sent;
            if !more {
                break;
            }
        }
        if !frames.is_empty() {
            self.stats.tx_full += 1;
        }
        Ok(total)
    }

    fn caps(&self) -> PortCaps {
        let vdev = ["net_af_packet", "net_af_xdp", "net_tap", "net_pcap", "net_ring", "net_null"];
        let copy_mode =
            if vdev.iter().any(|d| self.dev.driver.starts_with(d)) { CopyMode::Copy } else { CopyMode::ZeroCopy };
        PortCaps {
            name: format!("dpdk:{}:{} ({})", self.dev.name, self.queue, self.dev.driver),
            mtu: self.mtu,
            max_burst: MAX_BURST,
            queues: self.dev.queues as u32,
            queue_id: self.queue as u32,
            copy_mode,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac: Some(self.mac),
        }
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        if self.dev.queues == 1 {
            if let Ok(e) = self.eth_stats() {
                s.rx_dropped += e.imissed + e.rx_nombuf;
                s.rx_ring_full += e.imissed;
                s.rx_no_buffer += e.rx_nombuf;
            }
        }
        s
    }

    fn tx_pool(&self) -> &FramePool {
        &self.tx_pool
    }
}

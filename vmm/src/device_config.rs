//! The device options of `umbra run`, spelled as cloud-hypervisor spells
//! them: `--disk path=FILE[,readonly=on][,direct=on]`,
//! `--vsock cid=N,socket=PATH`, `--rng`.

use std::path::PathBuf;
use thiserror::Error;

/// Why a device option was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceConfigError {
    /// `key=value` pairs only.
    #[error("'{0}' is not key=value")]
    ParsePair(String),
    /// A key the option does not have.
    #[error("unknown key '{key}' (expected {expected})")]
    CheckKey {
        /// The key.
        key: String,
        /// The keys there are.
        expected: &'static str,
    },
    /// A required key is missing.
    #[error("missing {0}=")]
    FindKey(&'static str),
    /// An on/off value that is neither.
    #[error("{key}={value}: expected on or off")]
    ParseSwitch {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A context ID that a guest cannot have.
    #[error("cid={0}: guest context IDs are 3 to 2^32-2")]
    CheckCid(String),
}

/// One `--disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image.
    pub path: PathBuf,
    /// `readonly=on`: writes are refused (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// `direct=on`: O_DIRECT, no host page cache.
    pub direct: bool,
    /// `iommu=on`: the device sits behind the virtio-iommu.
    pub iommu: bool,
}

/// `--vsock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID.
    pub cid: u64,
    /// The host side: Firecracker's hybrid vsock Unix socket.
    pub socket: PathBuf,
    /// `iommu=on`.
    pub iommu: bool,
}

fn pairs(text: &str) -> Result<Vec<(&str, &str)>, DeviceConfigError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .ok_or_else(|| DeviceConfigError::ParsePair(pair.to_string()))
        })
        .collect()
}

fn switch(key: &str, value: &str) -> Result<bool, DeviceConfigError> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(DeviceConfigError::ParseSwitch {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

impl DiskConfig {
    /// Parses `path=FILE[,readonly=on][,direct=on][,iommu=on]`.
    pub fn parse(text: &str) -> Result<Self, DeviceConfigError> {
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            read_only: false,
            direct: false,
            iommu: false,
        };
        let mut path = None;
        for (key, value) in pairs(text)? {
            match key {
                "path" => path = Some(PathBuf::from(value)),
                "readonly" => disk.read_only = switch(key, value)?,
                "direct" => disk.direct = switch(key, value)?,
                "iommu" => disk.iommu = switch(key, value)?,
                _ => {
                    return Err(DeviceConfigError::CheckKey {
                        key: key.to_string(),
                        expected: "path, readonly, direct, iommu",
                    })
                }
            }
        }
        disk.path = path.ok_or(DeviceConfigError::FindKey("path"))?;
        Ok(disk)
    }
}

impl VsockConfig {
    /// Parses `cid=N,socket=PATH[,iommu=on]`.
    pub fn parse(text: &str) -> Result<Self, DeviceConfigError> {
        let (mut cid, mut socket, mut iommu) = (None, None, false);
        for (key, value) in pairs(text)? {
            match key {
                "cid" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| DeviceConfigError::CheckCid(value.to_string()))?;
                    // 0-2 are reserved (hypervisor, local, host) and
                    // u32::MAX is VMADDR_CID_ANY.
                    if !(3..u64::from(u32::MAX)).contains(&n) {
                        return Err(DeviceConfigError::CheckCid(value.to_string()));
                    }
                    cid = Some(n);
                }
                "socket" => socket = Some(PathBuf::from(value)),
                "iommu" => iommu = switch(key, value)?,
                _ => {
                    return Err(DeviceConfigError::CheckKey {
                        key: key.to_string(),
                        expected: "cid, socket, iommu",
                    })
                }
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or(DeviceConfigError::FindKey("cid"))?,
            socket: socket.ok_or(DeviceConfigError::FindKey("socket"))?,
            iommu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_parse_as_cloud_hypervisor_spells_them() {
        let disk = DiskConfig::parse("path=/tmp/d.img,readonly=on,direct=off").unwrap();
        assert_eq!(disk.path, PathBuf::from("/tmp/d.img"));
        assert!(disk.read_only && !disk.direct && !disk.iommu);
        assert_eq!(
            DiskConfig::parse("readonly=on"),
            Err(DeviceConfigError::FindKey("path"))
        );
        assert!(matches!(
            DiskConfig::parse("path=x,ro=on"),
            Err(DeviceConfigError::CheckKey { .. })
        ));
        assert!(matches!(
            DiskConfig::parse("path=x,direct=yes"),
            Err(DeviceConfigError::ParseSwitch { .. })
        ));
    }

    #[test]
    fn vsock_needs_a_guest_cid_and_a_socket() {
        let vsock = VsockConfig::parse("cid=3,socket=/tmp/v.sock").unwrap();
        assert_eq!((vsock.cid, vsock.socket.to_str()), (3, Some("/tmp/v.sock")));
        for bad in [
            "cid=2,socket=s",
            "cid=4294967295,socket=s",
            "cid=x,socket=s",
        ] {
            assert!(matches!(
                VsockConfig::parse(bad),
                Err(DeviceConfigError::CheckCid(_))
            ));
        }
        assert_eq!(
            VsockConfig::parse("cid=3"),
            Err(DeviceConfigError::FindKey("socket"))
        );
    }
}

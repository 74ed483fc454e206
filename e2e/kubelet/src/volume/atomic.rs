//! Kubelet's atomic writer layout for ConfigMap, Secret, projected and downward API volumes:
//!
//! ```text
//! <dir>/..2026_11_22_10_00_00.123456789/broker.yaml   the files of one version
//! <dir>/..data -> ..2026_11_22_10_00_00.123456789      swapped atomically (rename) on update
//! <dir>/broker.yaml -> ..data/broker.yaml              one symlink per top-level entry
//! ```
//!
//! A reader that opens `<dir>/broker.yaml` always sees one complete version, and a file watcher that
//! follows symlinks sees the change when `..data` moves. An unchanged payload is not rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

/// The symlink to the current version.
pub const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The files of a volume by relative path (`tls/ca.crt`); paths are validated when the payload is built.
pub type Payload = BTreeMap<String, FileEntry>;

/// Writes `payload` into `dir` as a new version unless the current one holds the same bytes.
/// Returns whether anything was written.
pub fn write_atomically(dir: &Path, payload: &Payload) -> io::Result<bool> {
    fs::create_dir_all(dir)?;
    let data_link = dir.join(DATA_LINK);
    let old_version = fs::read_link(&data_link).ok();
    if let Some(old) = &old_version
        && same_contents(&dir.join(old), payload)?
    {
        return Ok(false);
    }

    let version = new_version_dir(dir)?;
    for (path, file) in payload {
        let target = dir.join(&version).join(path);
        if let Some(parent) = target.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        fs::write(&target, &file.data)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode & 0o777))?;
    }

    let tmp = dir.join(DATA_LINK_TMP);
    remove_if_present(&tmp)?;
    symlink(&version, &tmp)?;
    fs::rename(&tmp, &data_link)?;

    let tops: BTreeSet<&str> = payload
        .keys()
        .filter_map(|path| path.split('/').next())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(top), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..")
            && !tops.contains(name.as_str())
            && entry.file_type()?.is_symlink()
        {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old_version {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// `..<UTC date and time>.<nanoseconds>`, created empty, unique in `dir`.
fn new_version_dir(dir: &Path) -> io::Result<PathBuf> {
    let now = Timestamp::now();
    let stamp = format!(
        "..{}.{:09}",
        now.to_zoned(TimeZone::UTC).strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let mut name = stamp.clone();
    for attempt in 1.. {
        match DirBuilder::new().mode(0o755).create(dir.join(&name)) {
            Ok(()) => break,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                name = format!("{stamp}{attempt}");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(PathBuf::from(name))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn same_contents(version: &Path, payload: &Payload) -> io::Result<bool> {
    let mut found = BTreeMap::new();
    read_tree(version, "", &mut found)?;
    Ok(found.len() == payload.len()
        && payload
            .iter()
            .all(|(path, file)| found.get(path).is_some_and(|data| *data == file.data)))
}

/// Every regular file under `dir`, by path relative to the version directory.
fn read_tree(dir: &Path, prefix: &str, found: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            read_tree(&entry.path(), &format!("{name}/"), found)?;
        } else {
            found.insert(name, fs::read(entry.path())?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(path, data)| {
                (
                    (*path).to_owned(),
                    FileEntry {
                        data: data.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).expect("readable file")
    }

    #[test]
    fn files_are_symlinks_into_the_data_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_atomically(
            dir.path(),
            &payload(&[("broker.yaml", "a"), ("tls/ca.crt", "ca")]),
        );
        assert!(written.expect("write"));

        let version = fs::read_link(dir.path().join("..data")).expect("..data is a symlink");
        assert!(version.to_string_lossy().starts_with("..20"), "{version:?}");
        assert_eq!(
            fs::read_link(dir.path().join("broker.yaml")).expect("symlink"),
            Path::new("..data/broker.yaml")
        );
        assert_eq!(
            fs::read_link(dir.path().join("tls")).expect("symlink"),
            Path::new("..data/tls")
        );
        assert_eq!(read(&dir.path().join("broker.yaml")), "a");
        assert_eq!(read(&dir.path().join("tls/ca.crt")), "ca");
    }

    #[test]
    fn an_update_swaps_the_version_and_drops_removed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomically(dir.path(), &payload(&[("a", "1"), ("b", "1")])).expect("first write");
        let first = fs::read_link(dir.path().join("..data")).expect("..data");

        let unchanged =
            write_atomically(dir.path(), &payload(&[("a", "1"), ("b", "1")])).expect("same");
        assert!(!unchanged);
        assert_eq!(
            fs::read_link(dir.path().join("..data")).expect("..data"),
            first
        );

        assert!(write_atomically(dir.path(), &payload(&[("a", "2")])).expect("update"));
        let second = fs::read_link(dir.path().join("..data")).expect("..data");
        assert_ne!(first, second);
        assert_eq!(read(&dir.path().join("a")), "2");
        assert!(
            fs::symlink_metadata(dir.path().join("b")).is_err(),
            "b is gone"
        );
        assert!(
            !dir.path().join(&first).exists(),
            "the old version is removed"
        );
        assert!(!dir.path().join("..data_tmp").exists());
    }

    #[test]
    fn modes_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = payload(&[("key", "secret")]);
        if let Some(file) = files.get_mut("key") {
            file.mode = 0o600;
        }
        write_atomically(dir.path(), &files).expect("write");
        let mode = fs::metadata(dir.path().join("key"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

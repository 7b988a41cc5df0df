//! Files the gateway reads again when they change: TLS material, CRLs, the compiled policy.
//!
//! Each group is looked at every [`INTERVAL`], as `gateway/revocation.py`'s `FileWatch`:
//! a file counts as changed when its modification time, size or inode does (an operator's
//! `mv` of a new file over the old one changes the inode, even within the same second).

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::Duration;

/// How often the files are looked at.
pub const INTERVAL: Duration = Duration::from_millis(250);

type Stamp = Option<(i64, i64, u64, u64)>;

/// A group of files and what they looked like when last read.
#[derive(Debug)]
pub struct Watched {
    files: Vec<(PathBuf, Stamp)>,
}

fn stamp(path: &PathBuf) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.size(),
        metadata.ino(),
    ))
}

impl Watched {
    /// Watch `files`, as they are now.
    #[must_use]
    pub fn new(files: impl IntoIterator<Item = PathBuf>) -> Self {
        Watched {
            files: files
                .into_iter()
                .map(|path| {
                    let now = stamp(&path);
                    (path, now)
                })
                .collect(),
        }
    }

    /// Whether any file changed since the last call (or since [`Watched::new`]).
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, last) in &mut self.files {
            let now = stamp(path);
            if now != *last {
                *last = now;
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_or_replaced_file_is_a_change_and_an_untouched_one_is_not() {
        let folder = std::env::temp_dir().join(format!("lienthong-reload-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("policy.json");
        std::fs::write(&path, "one").unwrap();
        let mut watched = Watched::new([path.clone()]);
        assert!(!watched.changed());
        std::fs::write(&path, "three").unwrap();
        assert!(watched.changed());
        assert!(!watched.changed());
        let staged = folder.join("staged");
        std::fs::write(&staged, "three").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        assert!(watched.changed());
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

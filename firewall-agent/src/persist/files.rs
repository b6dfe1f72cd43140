//! Replacing a file on disk without trusting what else sits in its
//! directory (the write-back the README's "The CLI" describes; step 2 of
//! `docs/reconciler.md`, "The order of every change").
//!
//! A write goes to a new file with a random name, created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600) in the directory of the file it
//! replaces: an existing file or a link planted at that name makes the
//! create fail and another name is drawn, so nothing is ever followed or
//! overwritten. The contents are written and synced, the replaced file's
//! mode and owner are set on the new file through its descriptor, the new
//! file is renamed over the old one, and the directory is synced. Only the
//! file vaultfw created is ever chmod'ed, chown'ed or renamed.
//!
//! A path that is a symbolic link (GitOps checkouts, Kubernetes ConfigMaps)
//! is written *through*: the link's final target is replaced in the
//! target's own directory, and the link stays the link it was.
//!
//! Temporary files are named `.<file name>.vaultfw-<random>.tmp`; one that
//! a crash left behind is removed by [`remove_leftover_temp_files`] when the
//! daemon starts.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PersistError;

/// What every temporary file's name carries between the replaced file's
/// name and the random part: `.<file name>` + this + `<random>` + [`TEMP_SUFFIX`].
pub const TEMP_MARKER: &str = ".vaultfw-";
/// The end of every temporary file's name.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Random characters in a temporary file's name (62 possible each).
const TEMP_RANDOM_LEN: usize = 12;

/// The name prefix of the temporary files that replace `file_name`.
fn temp_prefix(file_name: &OsStr) -> String {
    format!(".{}{TEMP_MARKER}", file_name.to_string_lossy())
}

/// Whether `name` is one of vaultfw's temporary files for `file_name`.
fn is_temp_name(name: &OsStr, file_name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    let prefix = temp_prefix(file_name);
    name.len() > prefix.len() + TEMP_SUFFIX.len()
        && name.starts_with(&prefix)
        && name.ends_with(TEMP_SUFFIX)
}

/// The file that a write to `path` replaces: `path` itself, or, when it is a
/// symbolic link, its final target (every link resolved). A path that does
/// not exist yet is created where it names; a link to a missing file is an
/// error (writing would create a file somewhere the operator did not name).
fn resolve_target(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(target) => Ok(target),
        Err(error) if error.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "it is a symbolic link to a file that does not exist; point the link at the \
                 policy file, or name the file itself",
            )),
            _ => Ok(path.to_path_buf()),
        },
        Err(error) => Err(error),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates a temporary file for replacing `target`, in `dir`, never
/// following or reusing anything at the chosen name.
fn create_temp(dir: &Path, target_name: &OsStr) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(target_name))
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM_LEN)
        .make_in(dir, open_exclusive)
}

/// Opens a file that must not exist yet: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode
/// 0600 (its final mode is set once written). Fails with `AlreadyExists`
/// when anything — a file or a link, dangling or not — has the name.
fn open_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Replaces the file at `path` with `contents` atomically: a crash leaves
/// the old file or the new one, never part of one. The new file keeps the
/// old one's mode and owner (a new file gets mode 0666 less the umask).
/// When `path` is a symbolic link, its final target is replaced and the
/// link is left as it is (see the module documentation).
///
/// Errors: [`PersistError::Io`] naming `path`; the previous file is then
/// intact and no temporary file is left behind.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), PersistError> {
    stage(path, contents)?.commit()
}

/// A replacement of a file, written and synced under its temporary name
/// but not yet in place: [`StagedWrite::commit`] puts it there; dropping
/// it removes the temporary file, and the file it would replace never
/// changed. So the slow part of a write (the data's sync) can run before
/// it is known whether the write is wanted.
pub struct StagedWrite {
    temp: tempfile::NamedTempFile,
    /// The file replaced (a link's final target).
    target: PathBuf,
    /// The path as the caller named it (for errors).
    path: PathBuf,
}

/// The first half of [`write_atomically`]: the new file is created in the
/// directory of the file it replaces, written, given the old file's mode
/// and owner, and synced.
///
/// Errors: as [`write_atomically`]'s; nothing is left behind.
pub fn stage(path: &Path, contents: &str) -> Result<StagedWrite, PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let target = resolve_target(path).map_err(io)?;
    let dir = parent_dir(&target);
    let name = target.file_name().ok_or_else(|| {
        io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let previous = match fs::metadata(&target) {
        Ok(meta) if meta.is_file() => Some(meta),
        Ok(_) => {
            return Err(io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file; name a regular file",
            )));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io(error)),
    };
    // Dropping `temp` on any error below removes it (by its path, which
    // only this function knows).
    let mut temp = create_temp(dir, name).map_err(io)?;
    let file = temp.as_file_mut();
    file.write_all(contents.as_bytes()).map_err(io)?;
    let mode = previous
        .as_ref()
        .map_or_else(|| 0o666 & !umask(), |m| m.permissions().mode() & 0o7777);
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    if let Some(meta) = &previous {
        let ours = file.metadata().map_err(io)?;
        if (ours.uid(), ours.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(&*file, Some(meta.uid()), Some(meta.gid())).map_err(
                |source| {
                    io(io::Error::new(
                        source.kind(),
                        format!(
                            "cannot give the new file the owner {}:{} of the old one ({source}); \
                         run vaultfw as root or as the file's owner",
                            meta.uid(),
                            meta.gid()
                        ),
                    ))
                },
            )?;
            // fchown clears set-user-ID and set-group-ID bits: set them again.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io)?;
        }
    }
    file.sync_all().map_err(io)?;
    Ok(StagedWrite {
        temp,
        target,
        path: path.to_path_buf(),
    })
}

impl StagedWrite {
    /// Renames the new file over the one it replaces and syncs their
    /// directory: from then on the new file is the file, durably.
    ///
    /// Errors: [`PersistError::Io`] naming the path; when the rename
    /// failed, the previous file is intact and the temporary file removed.
    pub fn commit(self) -> Result<(), PersistError> {
        let io = |source| PersistError::Io {
            path: self.path.clone(),
            source,
        };
        self.temp.persist(&self.target).map_err(|e| io(e.error))?;
        File::open(parent_dir(&self.target))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

/// The process's file-mode creation mask, read without changing it
/// (`umask(2)` can only be read by setting it, which races other threads).
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Removes the temporary files an interrupted write of `policy` left
/// behind, in its directory and — when it is a symbolic link — in its
/// target's directory: regular files named `.<name>.vaultfw-*.tmp` (for the
/// link's and the target's name) that this process's user owns. Links,
/// directories, other users' files and every other name are left alone;
/// nothing is followed. Each removal is logged; returns the removed paths.
/// A directory that cannot be read is logged and skipped (never fatal).
pub fn remove_leftover_temp_files(policy: &Path) -> Vec<PathBuf> {
    let mut places: Vec<(PathBuf, &OsStr)> = Vec::new();
    if let Some(name) = policy.file_name() {
        places.push((parent_dir(policy).to_path_buf(), name));
    }
    let target = fs::canonicalize(policy).ok();
    if let Some(target) = &target
        && let Some(name) = target.file_name()
    {
        let dir = parent_dir(target).to_path_buf();
        let same = places.iter().any(|(d, n)| *n == name && same_dir(d, &dir));
        if !same {
            places.push((dir, name));
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut removed = Vec::new();
    for (dir, name) in places {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "cannot look for leftover temporary policy files");
                continue;
            }
        };
        for entry in entries.flatten() {
            if !is_temp_name(&entry.file_name(), name) {
                continue;
            }
            // lstat: a link is a link here, never what it points to.
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if !meta.file_type().is_file() || meta.uid() != euid {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a temporary policy file an interrupted write left behind");
                    removed.push(entry.path());
                }
                Err(error) => {
                    tracing::warn!(%error, path = %entry.path().display(), "cannot remove a leftover temporary policy file")
                }
            }
        }
    }
    removed
}

/// Whether two directory paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A private directory, removed on drop.
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("vaultfw-persist-")
            .tempdir()
            .expect("a temp dir")
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_staged_write_is_in_place_only_once_committed_and_dropped_it_leaves_nothing() {
        let dir = scratch();
        let path = dir.path().join("policy.toml");
        fs::write(&path, "old").unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let staged = stage(&path, "refused").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()).len(), 2, "the file and the staged one");
        drop(staged);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "never replaced");
        assert_eq!(names(dir.path()), ["policy.toml"], "no temporary file left");
        stage(&path, "new").unwrap().commit().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(names(dir.path()), ["policy.toml"]);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_keeps_its_mode() {
        let dir = scratch();
        let path = dir.path().join("policy.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(names(dir.path()), ["policy.toml"], "no temporary file left");
    }

    #[test]
    fn the_owner_of_the_replaced_file_is_kept() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: giving a file another owner needs root");
            return;
        }
        let dir = scratch();
        let path = dir.path().join("policy.toml");
        fs::write(&path, "old").unwrap();
        std::os::unix::fs::chown(&path, Some(4321), Some(8765)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o2640)).unwrap();
        write_atomically(&path, "new").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
        assert_eq!(
            mode(&path),
            0o2640,
            "the set-group-ID bit survives the chown"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    /// The name the write-back used before it chose random temporary names:
    /// a link planted there got its target overwritten and chmod'ed.
    #[test]
    fn a_link_planted_at_a_would_be_temp_name_is_not_followed() {
        let dir = scratch();
        let victim_dir = scratch();
        let victim = victim_dir.path().join("shadow");
        fs::write(&victim, "secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("policy.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let planted = dir
            .path()
            .join(format!(".policy.toml.vaultfw-{}.tmp", std::process::id()));
        symlink(&victim, &planted).unwrap();

        write_atomically(&path, "new").unwrap();
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "secret",
            "the link's target was written"
        );
        assert_eq!(mode(&victim), 0o600, "the link's target was chmod'ed");
        assert!(
            fs::symlink_metadata(&planted)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the planted link was replaced"
        );
        assert_eq!(fs::read_link(&planted).unwrap(), victim);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn the_temp_file_is_never_opened_through_a_link_or_over_a_file() {
        let dir = scratch();
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret").unwrap();
        let link = dir.path().join(".policy.toml.vaultfw-AAAAAAAAAAAA.tmp");
        symlink(&victim, &link).unwrap();
        let dangling = dir.path().join(".policy.toml.vaultfw-BBBBBBBBBBBB.tmp");
        symlink(dir.path().join("nothing"), &dangling).unwrap();
        for name in [&link, &dangling, &victim] {
            let error = open_exclusive(name).expect_err("an existing name must not be opened");
            assert_eq!(
                error.kind(),
                io::ErrorKind::AlreadyExists,
                "{}: {error}",
                name.display()
            );
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "secret");
        assert!(
            !dir.path().join("nothing").exists(),
            "a dangling link's target was created"
        );
    }

    #[test]
    fn a_symlinked_policy_file_is_written_through_and_stays_a_link() {
        // The shape of a Kubernetes ConfigMap volume: policy.toml ->
        // ..data/policy.toml, a relative link.
        let dir = scratch();
        let data = dir.path().join("..data");
        fs::create_dir(&data).unwrap();
        let target = data.join("policy.toml");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("policy.toml");
        symlink("..data/policy.toml", &link).unwrap();

        write_atomically(&link, "new").unwrap();
        let meta = fs::symlink_metadata(&link).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "the link was replaced by a file"
        );
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("..data/policy.toml")
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(mode(&target), 0o640);
        assert_eq!(names(dir.path()), ["..data", "policy.toml"]);
        assert_eq!(
            names(&data),
            ["policy.toml"],
            "no temporary file left beside the target"
        );
    }

    #[test]
    fn a_link_to_a_missing_file_is_refused() {
        let dir = scratch();
        let link = dir.path().join("policy.toml");
        symlink("gone.toml", &link).unwrap();
        let error = write_atomically(&link, "new").expect_err("nothing to write through to");
        assert!(error.to_string().contains("does not exist"), "{error}");
        assert_eq!(names(dir.path()), ["policy.toml"], "nothing created");
    }

    #[test]
    fn a_new_file_is_created_with_the_umask_mode() {
        let dir = scratch();
        let path = dir.path().join("subnets.toml");
        write_atomically(&path, "x").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "x");
        assert_eq!(mode(&path), 0o666 & !umask());
    }

    #[test]
    fn leftover_cleanup_removes_only_our_own_temp_files() {
        let dir = scratch();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let target = data.join("real.toml");
        fs::write(&target, "policy").unwrap();
        let link = dir.path().join("policy.toml");
        symlink(&target, &link).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret").unwrap();

        let ours_beside_link = dir.path().join(".policy.toml.vaultfw-x1y2z3.tmp");
        let ours_beside_target = data.join(".real.toml.vaultfw-a1b2c3.tmp");
        fs::write(&ours_beside_link, "half").unwrap();
        fs::write(&ours_beside_target, "half").unwrap();
        let kept = [
            // A link with our name: removing it is harmless, but following
            // it is not; it stays, as does its target.
            (dir.path().join(".policy.toml.vaultfw-link.tmp"), "link"),
            (
                dir.path().join(".other.toml.vaultfw-x1y2z3.tmp"),
                "another file's temp",
            ),
            (
                dir.path().join(".policy.toml.vaultfw-x1y2z3.bak"),
                "another suffix",
            ),
            (dir.path().join("notes.txt"), "a plain file"),
            (
                dir.path().join(".policy.toml.vaultfw-dir.tmp"),
                "a directory",
            ),
        ];
        symlink(&victim, &kept[0].0).unwrap();
        fs::write(&kept[1].0, "x").unwrap();
        fs::write(&kept[2].0, "x").unwrap();
        fs::write(&kept[3].0, "x").unwrap();
        fs::create_dir(&kept[4].0).unwrap();

        let mut removed = remove_leftover_temp_files(&link);
        removed.sort();
        let mut expected = vec![ours_beside_link.clone(), ours_beside_target.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!ours_beside_link.exists() && !ours_beside_target.exists());
        for (path, what) in &kept {
            assert!(
                fs::symlink_metadata(path).is_ok(),
                "{what} {} was removed",
                path.display()
            );
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "secret");
        assert_eq!(fs::read_to_string(&target).unwrap(), "policy");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            remove_leftover_temp_files(&link).is_empty(),
            "a second run finds nothing"
        );
    }
}

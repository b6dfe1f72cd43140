//! Reading an operator's input file safely: only regular files (a FIFO or
//! a device would block or never end), bounded in size, UTF-8 with the
//! position of the first bad byte. A daemon that reloads must never hang on
//! or exhaust memory over a bad file.

use std::io::Read;
use std::path::Path;

/// Largest policy or subnet-map file read (far above 1,000,000 rules).
pub const MAX_POLICY_BYTES: u64 = 64 * 1024 * 1024;
/// Largest service-tags file read (Microsoft's full file is ~5 MB).
pub const MAX_SERVICE_TAGS_BYTES: u64 = 256 * 1024 * 1024;

/// Reads `path` as UTF-8 text of at most `max_bytes`.
///
/// Errors (`std::io::Error` with a sentence that names the fix): not a
/// regular file, larger than `max_bytes`, not UTF-8, or what the OS said.
pub fn read_text_file(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO or device); give the path of the file itself",
        ));
    }
    if meta.len() > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the file is {} bytes, more than the {} MiB this input may be; check that it is \
                 the right file",
                meta.len(),
                max_bytes / (1024 * 1024)
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the file grew past {} MiB while being read",
                max_bytes / (1024 * 1024)
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text: the byte at offset {at} is not valid UTF-8; save the file as UTF-8"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_directories_oversized_and_non_utf8_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("vfw-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            read_text_file(&fifo, 100)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(
            read_text_file(&dir, 100)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        assert!(
            read_text_file(&big, 100)
                .unwrap_err()
                .to_string()
                .contains("101 bytes")
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, b"ok\xffno").unwrap();
        assert!(
            read_text_file(&bad, 100)
                .unwrap_err()
                .to_string()
                .contains("offset 2")
        );
        std::fs::write(&bad, "fine").unwrap();
        assert_eq!(read_text_file(&bad, 100).unwrap(), "fine");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! A base image without a registry: the host's static busybox, imported as a
//! `FROM scratch` image. Tests and `marvin demo` build on it (the engine
//! cannot pull images).

use std::collections::BTreeMap;

use super::{DockerEngine, Engine, EngineError};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Applets linked in `/bin`: what tests, health checks and demo services call.
const APPLETS: &[&str] = &[
    "[", "ash", "awk", "basename", "cat", "chmod", "cp", "cut", "date", "dirname", "echo", "env",
    "expr", "false", "grep", "head", "hostname", "httpd", "id", "kill", "ln", "ls", "mkdir", "mv",
    "nc", "nslookup", "printf", "ps", "pwd", "rm", "sed", "seq", "sh", "sleep", "sort", "tail",
    "tee", "test", "touch", "tr", "true", "uname", "wc", "wget", "yes",
];

const HINT: &str = "the base image is made from Debian's static busybox: \
                    install it with `apt-get install -y busybox-static`";

/// Make `tag` from the host's static busybox unless it exists; the image carries `labels`.
pub async fn ensure_busybox_image(
    engine: &DockerEngine,
    tag: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    if engine.image_exists(tag).await? {
        return Ok(());
    }
    let busybox = tokio::fs::read(BUSYBOX_PATH)
        .await
        .map_err(|e| EngineError::Missing(format!("cannot read {BUSYBOX_PATH} ({e}); {HINT}")))?;
    if !is_static_elf(&busybox) {
        return Err(EngineError::Missing(format!(
            "{BUSYBOX_PATH} is not a statically linked program, so it cannot run in an empty image; {HINT}"
        )));
    }
    let rootfs = rootfs_tar(&busybox)
        .map_err(|e| EngineError::Api(format!("packing the busybox root filesystem: {e}")))?;
    engine
        .import_rootfs(rootfs, tag, image_changes(labels))
        .await?;
    Ok(())
}

/// The Dockerfile lines applied on import: labels and a shell as the default command.
fn image_changes(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut changes: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("LABEL {}={}", quote(k), quote(v)))
        .collect();
    changes.push(r#"CMD ["sh"]"#.to_string());
    changes
}

/// A Dockerfile double-quoted word.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether an ELF executable has no program interpreter (dynamic loader).
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| bytes.get(at..at + len);
    // ELF magic, 64-bit, little-endian: what Debian's amd64/arm64 builds are.
    if read(0, 6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let u16_at = |at| read(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at =
        |at| read(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes were read")));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..phnum).all(|i| {
        read(phoff + i * phentsize, 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes were read")))
            .is_some_and(|kind| kind != PT_INTERP)
    })
}

/// A root filesystem: `/bin/busybox`, applet links, and the directories programs expect.
fn rootfs_tar(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("var", 0o755),
    ] {
        let mut header = entry_header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    let group = b"root:x:0:\nnogroup:x:65534:\n";
    for (path, content) in [("etc/passwd", &passwd[..]), ("etc/group", &group[..])] {
        let mut header = entry_header(tar::EntryType::Regular, 0o644, content.len());
        tar.append_data(&mut header, path, content)?;
    }
    let mut header = entry_header(tar::EntryType::Regular, 0o755, busybox.len());
    tar.append_data(&mut header, "bin/busybox", busybox)?;
    for applet in APPLETS {
        let mut header = entry_header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    tar.into_inner()
}

fn entry_header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .expect("readable tar")
            .map(|e| {
                let e = e.expect("entry");
                let path = e.path().expect("path").display().to_string();
                let link = e
                    .link_name()
                    .expect("link name")
                    .map(|l| l.display().to_string());
                (path, e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn rootfs_has_busybox_and_applet_links_to_it() {
        let tar_bytes = rootfs_tar(b"fake busybox").expect("tar");
        let entries = entries(&tar_bytes);
        assert!(entries.contains(&("bin/busybox".into(), tar::EntryType::Regular, None)));
        for applet in ["sh", "httpd", "wget", "nslookup", "true", "false", "env"] {
            assert!(
                entries.contains(&(
                    format!("bin/{applet}"),
                    tar::EntryType::Symlink,
                    Some("busybox".into())
                )),
                "missing {applet}"
            );
        }
        assert!(
            entries
                .iter()
                .any(|(p, k, _)| p == "tmp" && *k == tar::EntryType::Directory)
        );
    }

    #[test]
    fn labels_become_quoted_label_instructions() {
        let changes = image_changes(&BTreeMap::from([(
            "io.marvin.project".to_string(),
            "say \"hi\"".to_string(),
        )]));
        assert_eq!(
            changes,
            [
                r#"LABEL "io.marvin.project"="say \"hi\"""#.to_string(),
                r#"CMD ["sh"]"#.to_string()
            ]
        );
    }

    fn elf(program_header_types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(program_header_types.len() as u16).to_le_bytes());
        for kind in program_header_types {
            let mut entry = vec![0u8; 56];
            entry[..4].copy_from_slice(&kind.to_le_bytes());
            bytes.extend(entry);
        }
        bytes
    }

    #[test]
    fn a_program_with_an_interpreter_is_not_static() {
        assert!(is_static_elf(&elf(&[1, 1, 4])));
        assert!(!is_static_elf(&elf(&[6, 3, 1])));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&elf(&[1])[..0x42]));
    }
}

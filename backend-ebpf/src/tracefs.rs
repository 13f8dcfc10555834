//! Finding tracefs and parsing tracepoint format files.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use crate::EbpfError;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs directory, if one is mounted.
pub(crate) fn find() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// The tracefs directory, mounting it at /sys/kernel/tracing when it is not mounted and
/// we may mount (aya resolves tracepoint ids through it).
pub(crate) fn find_or_mount() -> Result<PathBuf, EbpfError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    // Mounted but closed to us (tracefs is usually mode 0700, root only).
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if let Err(e) = fs::read_dir(dir)
            && e.kind() == io::ErrorKind::PermissionDenied
        {
            return Err(EbpfError::PermissionDenied {
                what: format!("reading tracefs at {dir}"),
                source: e,
            });
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(EbpfError::NoTracefs);
    }
    let target = PathBuf::from(TRACEFS);
    let c = |s: &str| CString::new(s).expect("no NUL in constant");
    let (src, dst, fstype) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(EbpfError::MountTracefs {
            path: target,
            source: io::Error::last_os_error(),
        });
    }
    find().ok_or(EbpfError::NoTracefs)
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `__data_loc char[]`, `__u8` (for
    /// `__u8 saddr[4]`).
    pub ty: String,
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Why a tracepoint's format could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// No such tracepoint on this kernel.
    Missing,
    Unreadable(String),
    Parse(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("tracepoint not present in this kernel"),
            Self::Unreadable(e) => write!(f, "format file unreadable: {e}"),
            Self::Parse(e) => write!(f, "format file not understood: {e}"),
        }
    }
}

pub(crate) fn read_format(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<Format, FormatError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    match fs::read_to_string(&path) {
        Ok(text) => parse_format(&text).map_err(FormatError::Parse),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FormatError::Missing),
        Err(e) => Err(FormatError::Unreadable(format!("{}: {e}", path.display()))),
    }
}

/// Parses the `field:` lines of a format file:
/// `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;`
pub(crate) fn parse_format(text: &str) -> Result<Format, String> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<u32>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!("malformed line `{line}`"));
        };
        // The name is the declaration's last word, minus any array suffix.
        let (ty, name) = match decl.rsplit_once(char::is_whitespace) {
            Some((ty, name)) => (ty.trim(), name),
            None => return Err(format!("no field name in `{line}`")),
        };
        let name = name.split('[').next().unwrap_or(name);
        if name.is_empty() {
            return Err(format!("no field name in `{line}`"));
        }
        fields.push(Field {
            name: name.to_owned(),
            ty: ty.to_owned(),
            offset,
            size,
        });
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(Format { fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET: &str = "name: tcp_send_reset
ID: 1475
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p skaddr=%p src=%pISpc\", REC->skbaddr
";

    #[test]
    fn parses_fields_arrays_and_pointers() {
        let f = parse_format(SEND_RESET).unwrap();
        assert_eq!(f.fields.len(), 10);
        let skaddr = f.field("skaddr").unwrap();
        assert_eq!(
            (skaddr.offset, skaddr.size, skaddr.ty.as_str()),
            (16, 8, "const void *")
        );
        let saddr = f.field("saddr").unwrap();
        assert_eq!(
            (saddr.offset, saddr.size, saddr.ty.as_str()),
            (32, 28, "__u8")
        );
        assert_eq!(f.field("reason").unwrap().ty, "enum sk_rst_reason");
        assert!(f.field("sport").is_none());
    }

    #[test]
    fn parses_data_loc() {
        let text = "format:\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        let f = parse_format(text).unwrap();
        let fname = f.field("filename").unwrap();
        assert_eq!((fname.offset, fname.size), (8, 4));
        assert_eq!(fname.ty, "__data_loc char[]");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_format("nothing here").is_err());
        assert!(parse_format("\tfield:int x;\toffset:zz;\tsize:4;").is_err());
    }
}

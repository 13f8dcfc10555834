//! Kernel struct member offsets from the running kernel's BTF (via btf-rs).

use btf_rs::{Btf, BtfType, Type};

pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What the programs will read at a member, checked against BTF so that a member whose
/// type changed is reported unavailable instead of read with the wrong width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// An integer (or enum) of this many bytes.
    Int(usize),
    /// A pointer.
    Ptr,
    /// A struct or union of this many bytes (e.g. `struct in6_addr`).
    Sized(usize),
    /// An integer of any width, read by its low bytes (a field whose type moved between
    /// kernels, e.g. `pt_regs.cs`).
    AnyInt,
}

pub(crate) struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open() -> Result<Self, String> {
        Btf::from_file(VMLINUX_BTF)
            .map(|btf| Self { btf })
            .map_err(|e| format!("{VMLINUX_BTF}: {e}"))
    }

    /// Byte offset of `path` (e.g. `["__sk_common", "skc_state"]`) inside `struct
    /// strukt`, looking through anonymous struct/union members at every level.
    pub fn member_offset(
        &self,
        strukt: &str,
        path: &[&str],
        expect: Expect,
    ) -> Result<u32, String> {
        let types = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|e| format!("struct {strukt}: {e}"))?;
        let mut ty = types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| format!("struct {strukt} not in BTF"))?;
        let mut offset_bits: u64 = 0;
        let mut walked = String::from(strukt);
        for name in path {
            let (bits, member_ty) = self
                .find_member(&ty, name)?
                .ok_or_else(|| format!("{walked} has no member `{name}`"))?;
            offset_bits += bits;
            walked.push('.');
            walked.push_str(name);
            ty = member_ty;
        }
        if !offset_bits.is_multiple_of(8) {
            return Err(format!("{walked} is a bitfield"));
        }
        let ty = self.strip(ty)?;
        let ok = match (expect, &ty) {
            (Expect::Ptr, Type::Ptr(_)) => true,
            (Expect::Int(n), Type::Int(i)) => i.size() == n,
            (Expect::Int(n), Type::Enum(e)) => e.size() == n,
            (Expect::Sized(n), Type::Struct(s) | Type::Union(s)) => s.size() == n,
            (Expect::AnyInt, Type::Int(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{walked} is a {}, expected {expect:?}",
                describe(&ty)
            ));
        }
        u32::try_from(offset_bits / 8).map_err(|_| format!("{walked}: offset too large"))
    }

    /// Finds member `name` in struct/union `ty` (through typedefs and qualifiers),
    /// searching anonymous members recursively. Returns its bit offset and type.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u64, Type)>, String> {
        let ty = self.strip(ty.clone())?;
        let members = match &ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            other => return Err(format!("`{name}` looked up in a {}", describe(other))),
        };
        for m in members {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                // Bitfields are never what we read; skip them (an anonymous one cannot
                // hold our member either).
                let member_name = self.btf.resolve_name(m).unwrap_or_default();
                if member_name == name {
                    return Err(format!("`{name}` is a bitfield"));
                }
                continue;
            }
            let member_name = self.btf.resolve_name(m).map_err(|e| e.to_string())?;
            let member_ty = self
                .btf
                .resolve_chained_type(m)
                .map_err(|e| e.to_string())?;
            if member_name == name {
                return Ok(Some((u64::from(m.bit_offset()), member_ty)));
            }
            if member_name.is_empty() {
                let inner = self.strip(member_ty)?;
                if matches!(inner, Type::Struct(_) | Type::Union(_))
                    && let Some((bits, t)) = self.find_member(&inner, name)?
                {
                    return Ok(Some((u64::from(m.bit_offset()) + bits, t)));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs, const/volatile/restrict and type tags to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, String> {
        for _ in 0..32 {
            match &ty {
                Type::Typedef(t) => ty = self.chained(t)?,
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => ty = self.chained(t)?,
                Type::TypeTag(t) => ty = self.chained(t)?,
                _ => return Ok(ty),
            }
        }
        Err("type chain too long".into())
    }

    fn chained(&self, t: &dyn BtfType) -> Result<Type, String> {
        self.btf.resolve_chained_type(t).map_err(|e| e.to_string())
    }
}

fn describe(ty: &Type) -> String {
    match ty {
        Type::Int(i) => format!("{}-byte int", i.size()),
        other => other.name().to_owned(),
    }
}

//! What a cgroup is, from its path alone (relative to the hierarchy root; the shape is the
//! same in cgroup v2 and in each v1 controller): a container of some runtime, a Kubernetes
//! pod, a systemd unit, or none of these.
//!
//! A plain scan, one segment at a time, deepest match winning, so nested setups (kind or
//! minikube nodes that are themselves docker containers, docker in docker) name the
//! innermost container. Shapes recognised, and where they were confirmed:
//! - docker, cgroupfs driver: `/docker/<id>` (docker/for-linux#1293); systemd driver:
//!   `/system.slice/docker-<id>.scope` (containerd/containerd#285); under kubelet (dockershim,
//!   cri-dockerd), systemd: `.../kubepods-<qos>-pod<uid_>.slice/docker-<id>.scope`
//!   (kubernetes/kubernetes#62896, falco's "systemd docker in cri-dockerd" layout).
//! - containerd CRI, systemd: `.../kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`
//!   (netdata/netdata#4868, cryptnono/cryptnono#47 on k3s); with a kubelet cgroup root, as in
//!   kind: `/kubelet.slice/kubelet-kubepods.slice/...` (containerd/nri#227); with user
//!   namespaces, runc's unexpanded `<pod slice>:cri-containerd:<id>` under system.slice
//!   (kubernetes/kubernetes#130982); cgroupfs: `/kubepods/<qos>/pod<uid>/<id>` (falco's
//!   "non-systemd containerd" layout; Google Cloud Shell); containerd namespaces `/k8s.io/<id>`
//!   (Cloud Shell, Kata guests) and `/default/<id>` (ctr; falco's containerd matcher);
//!   nerdctl, systemd: `/system.slice/nerdctl-<id>.scope` (falcosecurity/plugins#1378).
//! - CRI-O, systemd: `.../kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope` (kubernetes/minikube
//!   #11280, tkestack/gpu-manager#158), its monitor `crio-conmon-<id>.scope`, in the pod or in
//!   system.slice (openshift/microshift#697); cgroupfs: `/kubepods/<qos>/pod<uid>/crio-<id>`
//!   and `crio-conmon-<id>` (cri-o/cri-o#5511).
//! - podman, systemd: `/machine.slice/libpod-<id>.scope` and `libpod-conmon-<id>.scope`
//!   (containers/podman#507), pods `machine-libpod_pod_<podid>.slice/libpod-<id>.scope/container`
//!   and `--cgroups=split` `<unit>.service/libpod-payload-<id>` (containers/podman#13673);
//!   rootless `/user.slice/user-<uid>.slice/user@<uid>.service/user.slice/libpod-<id>.scope`
//!   (containers/podman#4639); cgroupfs `/libpod_parent/libpod-<id>` (podman inspect output).
//! - Kubernetes pod cgroups: cgroupfs `pod<uid>` under `kubepods/burstable`,
//!   `kubepods/besteffort` or directly `kubepods` (guaranteed); systemd
//!   `kubepods[-<qos>]-pod<uid with _ for ->.slice` (kubernetes/kubernetes#26751, cri-o#842).
//!   Static pods have a 32-hex config hash for uid instead of a UUID (netdata#4868).
//!
//! Container ids are 64 lowercase hex digits, as every runtime above makes them; anything else
//! (short, uppercase, a name given to `ctr run`) is not taken for a container id.

/// The runtime that made a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// The path names a container but not its runtime: a bare id directly under a pod's
    /// cgroupfs cgroup (`/kubepods/besteffort/pod<uid>/<id>`: containerd and docker via
    /// dockershim/cri-dockerd look the same there) or under a parent no runtime is known for
    /// (docker with a custom `--cgroup-parent`). Kubernetes metadata gives the runtime via the
    /// containerID scheme (`Runtime::from_scheme`).
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }

    /// The runtime of a Kubernetes containerID scheme: "docker" in "docker://<id>".
    pub fn from_scheme(scheme: &str) -> Option<Runtime> {
        match scheme {
            "docker" => Some(Runtime::Docker),
            "containerd" => Some(Runtime::Containerd),
            "cri-o" => Some(Runtime::CriO),
            "podman" => Some(Runtime::Podman),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// Full id: 64 lowercase hex digits.
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub container: Option<ContainerRef>,
    /// Kubernetes pod UID with dashes ("0f1c6a3e-5a2b-4c1d-9e8f-123456789abc"), or a static
    /// pod's 32-hex config hash.
    pub pod_uid: Option<String>,
    /// "guaranteed", "burstable" or "besteffort"; set with `pod_uid`.
    pub qos: Option<&'static str>,
    /// Innermost systemd unit ("nginx.service", "session-3.scope"), only for cgroups that are
    /// not a container's: what runs inside a container belongs to the container.
    pub unit: Option<String>,
    /// The cgroup of a runtime's monitor (conmon) for `container`: charged to the container's
    /// owner, but not the container's own processes.
    pub conmon: bool,
}

/// Prefixes of container cgroup names, each followed by the id and, for systemd scopes,
/// ".scope". Monitors come before their containers' prefix for readability only: "conmon-"
/// is never hex, so the order does not change results.
const CONTAINER_PREFIXES: &[(&str, Runtime, bool)] = &[
    ("docker-", Runtime::Docker, false),
    ("cri-containerd-", Runtime::Containerd, false),
    ("nerdctl-", Runtime::Containerd, false),
    ("crio-conmon-", Runtime::CriO, true),
    ("crio-", Runtime::CriO, false),
    ("libpod-conmon-", Runtime::Podman, true),
    ("libpod-payload-", Runtime::Podman, false),
    ("libpod-", Runtime::Podman, false),
];

const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap"];

/// What the cgroup at `path` is. Paths matching nothing give an all-empty `CgroupInfo`.
pub fn classify(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    let (mut parent, mut grandparent) = ("", "");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if let Some((slice, id)) = seg.split_once(":cri-containerd:") {
            // runc's "slice:prefix:name" form, left unexpanded (containerd with userns).
            if let Some((uid, qos)) = systemd_pod(slice) {
                info.set_pod(uid, qos);
            }
            if is_container_id(id) {
                info.set_container(Runtime::Containerd, id, false);
            }
        } else if let Some((runtime, id, conmon)) = container(seg, parent) {
            info.set_container(runtime, id, conmon);
        } else if let Some((uid, qos)) =
            systemd_pod(seg).or_else(|| cgroupfs_pod(seg, parent, grandparent))
        {
            info.set_pod(uid, qos);
        } else if info.container.is_none()
            && UNIT_SUFFIXES
                .iter()
                .any(|s| seg.len() > s.len() && seg.ends_with(s))
        {
            info.unit = Some(seg.to_string());
        }
        (grandparent, parent) = (parent, seg);
    }
    info
}

impl CgroupInfo {
    /// A pod below a container (a kind or minikube node) replaces it: the pod is the owner.
    fn set_pod(&mut self, uid: String, qos: &'static str) {
        *self = CgroupInfo {
            pod_uid: Some(uid),
            qos: Some(qos),
            ..CgroupInfo::default()
        };
    }

    /// The pod, if any, stays: it owns the container.
    fn set_container(&mut self, runtime: Runtime, id: &str, conmon: bool) {
        self.container = Some(ContainerRef {
            runtime,
            id: id.to_string(),
        });
        self.conmon = conmon;
        self.unit = None;
    }
}

fn container<'a>(seg: &'a str, parent: &str) -> Option<(Runtime, &'a str, bool)> {
    if is_container_id(seg) {
        let runtime = match parent {
            "docker" => Runtime::Docker,
            // containerd namespaces: CRI's and ctr/nerdctl's default.
            "k8s.io" | "default" => Runtime::Containerd,
            _ => Runtime::Unknown,
        };
        return Some((runtime, seg, false));
    }
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    CONTAINER_PREFIXES
        .iter()
        .find_map(|&(prefix, runtime, conmon)| {
            let id = name.strip_prefix(prefix)?;
            is_container_id(id).then_some((runtime, id, conmon))
        })
}

/// `kubepods-pod<uid_>.slice` (guaranteed) or `kubepods-<qos>-pod<uid_>.slice`, possibly
/// behind a kubelet cgroup root ("kubelet-kubepods-..."). The slice name escapes the uid's
/// dashes as underscores because "-" means nesting in systemd slice names.
fn systemd_pod(seg: &str) -> Option<(String, &'static str)> {
    let name = seg.strip_suffix(".slice")?;
    let (head, last) = name.rsplit_once('-')?;
    let uid = last.strip_prefix("pod")?.replace('_', "-");
    let (rest, level) = head.rsplit_once('-').unwrap_or(("", head));
    let under_kubepods = rest == "kubepods" || rest.ends_with("-kubepods");
    let qos = match level {
        "kubepods" => "guaranteed",
        "burstable" if under_kubepods => "burstable",
        "besteffort" if under_kubepods => "besteffort",
        _ => return None,
    };
    is_pod_uid(&uid).then_some((uid, qos))
}

/// `kubepods/pod<uid>` (guaranteed) or `kubepods/<qos>/pod<uid>`.
fn cgroupfs_pod(seg: &str, parent: &str, grandparent: &str) -> Option<(String, &'static str)> {
    let uid = seg.strip_prefix("pod")?;
    let qos = match (grandparent, parent) {
        (_, "kubepods") => "guaranteed",
        ("kubepods", "burstable") => "burstable",
        ("kubepods", "besteffort") => "besteffort",
        _ => return None,
    };
    is_pod_uid(uid).then(|| (uid.to_string(), qos))
}

fn is_lower_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(is_lower_hex)
}

/// A UUID (8-4-4-4-12, lowercase) or a static pod's 32-hex hash.
fn is_pod_uid(s: &str) -> bool {
    match s.len() {
        32 => s.bytes().all(is_lower_hex),
        36 => s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => is_lower_hex(b),
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Runtime::*;

    /// Expected result; "" stands for None.
    #[derive(Clone, Copy)]
    struct Want {
        runtime: Option<Runtime>,
        id: &'static str,
        pod: &'static str,
        qos: Option<&'static str>,
        unit: &'static str,
        conmon: bool,
    }

    const NONE: Want = Want {
        runtime: None,
        id: "",
        pod: "",
        qos: None,
        unit: "",
        conmon: false,
    };

    const fn ctr(runtime: Runtime, id: &'static str) -> Want {
        Want {
            runtime: Some(runtime),
            id,
            ..NONE
        }
    }

    const fn pod_ctr(
        runtime: Runtime,
        id: &'static str,
        pod: &'static str,
        qos: &'static str,
    ) -> Want {
        Want {
            runtime: Some(runtime),
            id,
            pod,
            qos: Some(qos),
            ..NONE
        }
    }

    const fn pod(pod: &'static str, qos: &'static str) -> Want {
        Want {
            pod,
            qos: Some(qos),
            ..NONE
        }
    }

    const fn unit(unit: &'static str) -> Want {
        Want { unit, ..NONE }
    }

    const fn conmon(w: Want) -> Want {
        Want { conmon: true, ..w }
    }

    /// (where the path comes from: runtime, driver, cgroup version and the thread showing
    /// it; path; expected)
    const CASES: &[(&str, &str, Want)] = &[
        // Docker standalone.
        (
            "docker 20.10, cgroupfs driver, cgroup v1 (docker/for-linux#1293)",
            "/docker/a2ffe0e97ac22657a2a023ad628e9df837c38a03b1ebc904d3f6d644eb1a1a81",
            ctr(
                Docker,
                "a2ffe0e97ac22657a2a023ad628e9df837c38a03b1ebc904d3f6d644eb1a1a81",
            ),
        ),
        (
            "docker 1.12, systemd driver, cgroup v1 (containerd/containerd#285)",
            "/system.slice/docker-b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26.scope",
            ctr(
                Docker,
                "b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26",
            ),
        ),
        (
            "docker, systemd driver, cgroup v2, container with its own sub-cgroups (cgroupns)",
            "/system.slice/docker-b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26.scope/init.scope",
            ctr(
                Docker,
                "b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26",
            ),
        ),
        (
            "docker, systemd driver, cgroup v2, systemd running inside the container",
            "/system.slice/docker-b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26.scope/system.slice/nginx.service",
            ctr(
                Docker,
                "b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26",
            ),
        ),
        (
            "docker buildkit step, cgroup v2 (cryptnono/cryptnono#47): no container id",
            "/docker/buildkit/t4967jvf8rbufklrhkicskyes",
            NONE,
        ),
        // Docker under kubelet (dockershim / cri-dockerd).
        (
            "kubelet + docker, systemd driver, cgroup v1, guaranteed (kubernetes/kubernetes#62896)",
            "/kubepods.slice/kubepods-pod10231429_28f6_11e8_8903_74dbd1a06fe0.slice/docker-32cc26191dad2120ae02fbe32e3cb962c291591439f28765da6c2b8dd28d7e48.scope",
            pod_ctr(
                Docker,
                "32cc26191dad2120ae02fbe32e3cb962c291591439f28765da6c2b8dd28d7e48",
                "10231429-28f6-11e8-8903-74dbd1a06fe0",
                "guaranteed",
            ),
        ),
        (
            "kubelet + docker, systemd driver, cgroup v1, besteffort (kubernetes/kubernetes#62896)",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0bacf352_28f6_11e8_8903_74dbd1a06fe0.slice/docker-edb3f1a77efffb09d7ad8d71bddf600f47fca2500557df2fc60815ad343c6260.scope",
            pod_ctr(
                Docker,
                "edb3f1a77efffb09d7ad8d71bddf600f47fca2500557df2fc60815ad343c6260",
                "0bacf352-28f6-11e8-8903-74dbd1a06fe0",
                "besteffort",
            ),
        ),
        (
            "kubelet + docker, systemd driver, cgroup v1, burstable (kubernetes/kubernetes#62896)",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2ac279fe_28fa_11e8_8904_74dbd1a06fe0.slice/docker-0eb2fce3f5e17f6373209d72560673456a6426bc584ff03d76c7802270bbe122.scope",
            pod_ctr(
                Docker,
                "0eb2fce3f5e17f6373209d72560673456a6426bc584ff03d76c7802270bbe122",
                "2ac279fe-28fa-11e8-8904-74dbd1a06fe0",
                "burstable",
            ),
        ),
        (
            "kubelet + dockershim or containerd, cgroupfs driver, cgroup v1: runtime not in the path",
            "/kubepods/besteffort/pod3d6beaa3-0049-43ef-b68c-e073d73494b0/accdf94879f0a494f317e9a0517f23cdd18b35ff9439efd0c5d8b6ae7e2b1f04",
            pod_ctr(
                Unknown,
                "accdf94879f0a494f317e9a0517f23cdd18b35ff9439efd0c5d8b6ae7e2b1f04",
                "3d6beaa3-0049-43ef-b68c-e073d73494b0",
                "besteffort",
            ),
        ),
        // containerd (CRI).
        (
            "containerd CRI, systemd driver, cgroup v2, burstable (netdata/netdata#4868)",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice/cri-containerd-2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36.scope",
            pod_ctr(
                Containerd,
                "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36",
                "55c6c714-b240-4dec-9a45-57b61696ab6e",
                "burstable",
            ),
        ),
        (
            "containerd CRI, systemd driver, cgroup v2, static pod with a config-hash uid (netdata/netdata#4868)",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8daa50c3a64c9ff60bb9eab7b44b56fd.slice/cri-containerd-2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5.scope",
            pod_ctr(
                Containerd,
                "2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5",
                "8daa50c3a64c9ff60bb9eab7b44b56fd",
                "burstable",
            ),
        ),
        (
            "k3s (containerd), systemd driver, cgroup v2, besteffort (cryptnono/cryptnono#47)",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7fda01c4_0ece_403d_88b4_c371d66d132a.slice/cri-containerd-e58a24d4a722c99712cff74ef69d93311089584eb32617b3890e0dcb996133f1.scope",
            pod_ctr(
                Containerd,
                "e58a24d4a722c99712cff74ef69d93311089584eb32617b3890e0dcb996133f1",
                "7fda01c4-0ece-403d-88b4-c371d66d132a",
                "besteffort",
            ),
        ),
        (
            "containerd CRI, systemd driver, cgroup v2, guaranteed (no qos slice)",
            "/kubepods.slice/kubepods-pod0f1c6a3e_5a2b_4c1d_9e8f_123456789abc.slice/cri-containerd-7dea796eb5d6826a85978fa316612874aa3d576ac576495bed83d77fbc9dc744.scope",
            pod_ctr(
                Containerd,
                "7dea796eb5d6826a85978fa316612874aa3d576ac576495bed83d77fbc9dc744",
                "0f1c6a3e-5a2b-4c1d-9e8f-123456789abc",
                "guaranteed",
            ),
        ),
        (
            "kind (containerd), systemd driver, kubelet cgroup root kubelet.slice, cgroup v2 (containerd/nri#227)",
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e.scope",
            pod_ctr(
                Containerd,
                "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e",
                "1e597579-417e-482f-bf65-5fe170c3aebd",
                "besteffort",
            ),
        ),
        (
            "containerd 2.0 + user namespaces, systemd driver, cgroup v2 (kubernetes/kubernetes#130982; ids from containerd/nri#227)",
            "/system.slice/kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice:cri-containerd:d7dfb4a21fe1703a8537e60d5af248af729315d187b24a538102d14874c8117d",
            pod_ctr(
                Containerd,
                "d7dfb4a21fe1703a8537e60d5af248af729315d187b24a538102d14874c8117d",
                "1e597579-417e-482f-bf65-5fe170c3aebd",
                "besteffort",
            ),
        ),
        (
            "containerd CRI, cgroupfs driver, cgroup v1, burstable (pod uid from kubernetes/kubernetes#109105)",
            "/kubepods/burstable/pod03f3a69f-82ff-4368-a1aa-16ddaf74ac22/499ef09f38420e5e16feb70d747dbce08f036eb4365173bef5589b21af38f2b7",
            pod_ctr(
                Unknown,
                "499ef09f38420e5e16feb70d747dbce08f036eb4365173bef5589b21af38f2b7",
                "03f3a69f-82ff-4368-a1aa-16ddaf74ac22",
                "burstable",
            ),
        ),
        (
            "containerd CRI, cgroupfs driver, cgroup v2, guaranteed (kubepods/pod<uid> per the pod resource design, kubernetes/kubernetes#26751)",
            "/kubepods/pod44e2e33e-776b-4284-a647-4bd959899c91/ba64f7c0ec6c86df331a1a5daf464605c3a69c688ca7ebf156a7a067e8e75d09",
            pod_ctr(
                Unknown,
                "ba64f7c0ec6c86df331a1a5daf464605c3a69c688ca7ebf156a7a067e8e75d09",
                "44e2e33e-776b-4284-a647-4bd959899c91",
                "guaranteed",
            ),
        ),
        (
            "containerd, k8s.io namespace as cgroup parent, cgroup v2 (Google Cloud Shell; Kata guests)",
            "/k8s.io/3d8f6f63ac932eaea905aceb8f4549b019a92f4917365b6eb0011af11d809476",
            ctr(
                Containerd,
                "3d8f6f63ac932eaea905aceb8f4549b019a92f4917365b6eb0011af11d809476",
            ),
        ),
        (
            "containerd via ctr, default namespace, cgroupfs, cgroup v2 (falco's containerd matcher)",
            "/default/845ee8909fe15c4f3d516e9bea5be54002404f8470a5bb8475821a2066a4b422",
            ctr(
                Containerd,
                "845ee8909fe15c4f3d516e9bea5be54002404f8470a5bb8475821a2066a4b422",
            ),
        ),
        (
            "nerdctl, systemd driver, cgroup v2 (falcosecurity/plugins#1378)",
            "/system.slice/nerdctl-80c6074ac26c2c087cc5a6644aa37aceae4900aeeb9b580e039e75474286b970.scope",
            ctr(
                Containerd,
                "80c6074ac26c2c087cc5a6644aa37aceae4900aeeb9b580e039e75474286b970",
            ),
        ),
        // CRI-O.
        (
            "CRI-O in a minikube node (itself a docker container), systemd driver, cgroup v1 (kubernetes/minikube#11280)",
            "/docker/d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/crio-0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0.scope",
            pod_ctr(
                CriO,
                "0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0",
                "2ca4a155-3599-498d-bb9d-4446693fa3ea",
                "besteffort",
            ),
        ),
        (
            "the minikube node itself, docker cgroupfs, cgroup v1 (kubernetes/minikube#11280)",
            "/docker/d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22/kubepods.slice",
            ctr(
                Docker,
                "d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22",
            ),
        ),
        (
            "CRI-O, systemd driver, cgroup v1, burstable (tkestack/gpu-manager#158)",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podefe83c92_ae76_41c6_b7c2_95fb143e6dd2.slice/crio-0375b48a72e3c6f9f7b0ec306c0464a3cc414ac84aa176de203aa103d53adafc.scope",
            pod_ctr(
                CriO,
                "0375b48a72e3c6f9f7b0ec306c0464a3cc414ac84aa176de203aa103d53adafc",
                "efe83c92-ae76-41c6-b7c2-95fb143e6dd2",
                "burstable",
            ),
        ),
        (
            "CRI-O (MicroShift), systemd driver, cgroup v2, besteffort (openshift/microshift#697)",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podc8bad552_5c99_4d4f_b71c_c426c0cde014.slice/crio-15b6e0c6490cad17fcf69eb837794349b4df96f84ba96c6be9828fe281c055a9.scope",
            pod_ctr(
                CriO,
                "15b6e0c6490cad17fcf69eb837794349b4df96f84ba96c6be9828fe281c055a9",
                "c8bad552-5c99-4d4f-b71c-c426c0cde014",
                "besteffort",
            ),
        ),
        (
            "CRI-O conmon in system.slice (conmon_cgroup = system.slice), cgroup v2 (openshift/microshift#697)",
            "/system.slice/crio-conmon-e0c85fe7644a858988d9687c2e0736a7d31922740d0f3e001c6b2e0aa7e5f528.scope",
            conmon(ctr(
                CriO,
                "e0c85fe7644a858988d9687c2e0736a7d31922740d0f3e001c6b2e0aa7e5f528",
            )),
        ),
        (
            "CRI-O conmon in the pod slice (conmon_cgroup = pod), systemd driver, cgroup v2",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podc8bad552_5c99_4d4f_b71c_c426c0cde014.slice/crio-conmon-d61328552873b5145655fa7918c7fbbce53dbe076d6c2b5fc95d660709af29c2.scope",
            conmon(pod_ctr(
                CriO,
                "d61328552873b5145655fa7918c7fbbce53dbe076d6c2b5fc95d660709af29c2",
                "c8bad552-5c99-4d4f-b71c-c426c0cde014",
                "besteffort",
            )),
        ),
        (
            "CRI-O, cgroupfs driver, cgroup v1, burstable (cri-o/cri-o#5511)",
            "/kubepods/burstable/pod44e2e33e-776b-4284-a647-4bd959899c91/crio-dc4b5f11a034ac50f4bf7a0f2396fce881f58dcb5b2fa5f0f74d5c2ad924c083",
            pod_ctr(
                CriO,
                "dc4b5f11a034ac50f4bf7a0f2396fce881f58dcb5b2fa5f0f74d5c2ad924c083",
                "44e2e33e-776b-4284-a647-4bd959899c91",
                "burstable",
            ),
        ),
        (
            "CRI-O conmon, cgroupfs driver, cgroup v1 (cri-o/cri-o#5511)",
            "/kubepods/burstable/pod44e2e33e-776b-4284-a647-4bd959899c91/crio-conmon-dc4b5f11a034ac50f4bf7a0f2396fce881f58dcb5b2fa5f0f74d5c2ad924c083",
            conmon(pod_ctr(
                CriO,
                "dc4b5f11a034ac50f4bf7a0f2396fce881f58dcb5b2fa5f0f74d5c2ad924c083",
                "44e2e33e-776b-4284-a647-4bd959899c91",
                "burstable",
            )),
        ),
        // Podman.
        (
            "podman rootful, systemd driver, cgroup v1 (containers/podman#507)",
            "/machine.slice/libpod-0411a2a82311fbc65b137ca550d5f7e6b6863bc734759be2f515b0b67062d49a.scope",
            ctr(
                Podman,
                "0411a2a82311fbc65b137ca550d5f7e6b6863bc734759be2f515b0b67062d49a",
            ),
        ),
        (
            "podman conmon, rootful, systemd driver, cgroup v1 (containers/podman#507)",
            "/machine.slice/libpod-conmon-0411a2a82311fbc65b137ca550d5f7e6b6863bc734759be2f515b0b67062d49a.scope",
            conmon(ctr(
                Podman,
                "0411a2a82311fbc65b137ca550d5f7e6b6863bc734759be2f515b0b67062d49a",
            )),
        ),
        (
            "podman pod member, rootful, systemd driver, cgroup v2, container sub-cgroup (containers/podman#13673)",
            "/machine.slice/machine-libpod_pod_ddf44d54b520f0b4469fcd01c3155ca49e6911dc2175471eb3a7b789187a7a89.slice/libpod-1dadda571b14eefb3158a15d0fff7e0089f9dd92f922679ed0116cccdfe8bb0f.scope/container",
            ctr(
                Podman,
                "1dadda571b14eefb3158a15d0fff7e0089f9dd92f922679ed0116cccdfe8bb0f",
            ),
        ),
        (
            "podman pod slice itself, cgroup v2 (containers/podman#13673): no container, not a unit",
            "/machine.slice/machine-libpod_pod_ddf44d54b520f0b4469fcd01c3155ca49e6911dc2175471eb3a7b789187a7a89.slice",
            NONE,
        ),
        (
            "podman --cgroups=split under a systemd service, cgroup v2 (containers/podman#13673)",
            "/srv.slice/container-homeassistant.service/libpod-payload-c4e8e0d642078c90dde4a8a65883a7c0bee26f751d7c6a3096dc322519c658d3",
            ctr(
                Podman,
                "c4e8e0d642078c90dde4a8a65883a7c0bee26f751d7c6a3096dc322519c658d3",
            ),
        ),
        (
            "podman --cgroups=split, the service's runtime cgroup (conmon), cgroup v2 (containers/podman#13673)",
            "/srv.slice/container-homeassistant.service/runtime",
            unit("container-homeassistant.service"),
        ),
        (
            "podman rootful, cgroupfs driver, cgroup v2 (podman inspect CgroupPath)",
            "/libpod_parent/libpod-cf594798841275880f780c2aa55954b2d218b92a7c82df039aef02e2f4fe83f1",
            ctr(
                Podman,
                "cf594798841275880f780c2aa55954b2d218b92a7c82df039aef02e2f4fe83f1",
            ),
        ),
        (
            "podman rootless, systemd driver, cgroup v2 (containers/podman#4639 shape)",
            "/user.slice/user-1001.slice/user@1001.service/user.slice/libpod-132ff0d72245e6f13a3bbc6cdc5376886897b60ac59eaa8dea1df7ab959cbf1c.scope",
            ctr(
                Podman,
                "132ff0d72245e6f13a3bbc6cdc5376886897b60ac59eaa8dea1df7ab959cbf1c",
            ),
        ),
        (
            "podman rootless, systemd driver, cgroup v2, container sub-cgroup",
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-be131b155b6a8ac24cfbafd05aa72c1575512f60dd242b24eec1c3cbb05e543a.scope/container",
            ctr(
                Podman,
                "be131b155b6a8ac24cfbafd05aa72c1575512f60dd242b24eec1c3cbb05e543a",
            ),
        ),
        // Kubernetes pod cgroups without a container.
        (
            "kubelet, cgroupfs driver, cgroup v1, pod cgroup (kubernetes/kubernetes#109105)",
            "/kubepods/burstable/pod03f3a69f-82ff-4368-a1aa-16ddaf74ac22",
            pod("03f3a69f-82ff-4368-a1aa-16ddaf74ac22", "burstable"),
        ),
        (
            "kubelet, systemd driver, cgroup v1, pod slice (cri-o/cri-o#842)",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12723d69_9268_11e7_84d0_c85b76cda386.slice",
            pod("12723d69-9268-11e7-84d0-c85b76cda386", "burstable"),
        ),
        (
            "kubelet, systemd driver, qos slice: no pod",
            "/kubepods.slice/kubepods-besteffort.slice",
            NONE,
        ),
        // systemd units.
        (
            "systemd service, cgroup v2",
            "/system.slice/nginx.service",
            unit("nginx.service"),
        ),
        (
            "systemd template instance, cgroup v2",
            "/system.slice/system-getty.slice/getty@tty1.service",
            unit("getty@tty1.service"),
        ),
        (
            "systemd login session, cgroup v2",
            "/user.slice/user-1000.slice/session-3.scope",
            unit("session-3.scope"),
        ),
        (
            "systemd user manager's service, cgroup v2",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            unit("foo.service"),
        ),
        (
            "systemd PID 1, cgroup v2",
            "/init.scope",
            unit("init.scope"),
        ),
        ("cgroup root", "/", NONE),
        ("systemd slice only", "/system.slice", NONE),
        // ksight's own `stat` cgroup and other hand-made cgroups: attributed by path.
        ("hand-made cgroup", "/ksight-stat-1234", NONE),
    ];

    fn check(source: &str, path: &str, want: Want) {
        let got = classify(path);
        let want = CgroupInfo {
            container: want.runtime.map(|runtime| ContainerRef {
                runtime,
                id: want.id.to_string(),
            }),
            pod_uid: (!want.pod.is_empty()).then(|| want.pod.to_string()),
            qos: want.qos,
            unit: (!want.unit.is_empty()).then(|| want.unit.to_string()),
            conmon: want.conmon,
        };
        assert_eq!(got, want, "{source}: {path}");
    }

    #[test]
    fn real_world_paths() {
        assert!(CASES.len() >= 30);
        for &(source, path, want) in CASES {
            check(source, path, want);
            // Same in a v1 controller path read without the leading slash, or with a trailing one.
            check(source, path.trim_start_matches('/'), want);
            check(source, &format!("{path}/"), want);
        }
    }

    #[test]
    fn near_misses_are_not_containers() {
        let id = "b33dda97580e721a69fa81742190341f858ea809ec4a9d74a8cfd411b0ee7c26";
        let upper = id.to_ascii_uppercase();
        for path in [
            format!("/docker/{}", &id[..12]),
            format!("/docker/{id}0"),
            format!("/docker/{upper}"),
            format!("/system.slice/docker-{upper}.scope"),
            format!("/system.slice/docker-{}.scope", &id[1..]),
            "/system.slice/crio-conmon-.scope".to_string(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podNOTAUID.slice"
                .to_string(),
            "/kubepods/burstable/pod03F3A69F-82FF-4368-A1AA-16DDAF74AC22".to_string(),
            "/kubepods/burstable/pod03f3a69f_82ff_4368_a1aa_16ddaf74ac22".to_string(),
            "/other/burstable/pod03f3a69f-82ff-4368-a1aa-16ddaf74ac22".to_string(),
            "/machine.slice/machine-pod0f1c6a3e_5a2b_4c1d_9e8f_123456789abc.slice".to_string(),
        ] {
            let got = classify(&path);
            assert_eq!(got.container, None, "{path}");
            assert_eq!(got.pod_uid, None, "{path}");
        }
        // A malformed container scope is still a scope unit.
        assert_eq!(
            classify(&format!("/system.slice/docker-{upper}.scope")).unit,
            Some(format!("docker-{upper}.scope"))
        );
    }

    #[test]
    fn odd_input_never_panics() {
        let long = "/a".repeat(10_000);
        let long_ids = format!("/docker/{}", "0123456789abcdef".repeat(4)).repeat(10_000);
        let odd = [
            "",
            "/",
            "//",
            "///docker//",
            ".scope",
            ".service",
            "-.slice",
            "pod",
            "pod-",
            "/kubepods/pod",
            "kubepods-pod.slice",
            "-pod.slice",
            "--.slice",
            ":cri-containerd:",
            "a:cri-containerd:b:cri-containerd:c",
            "/system.slice/\u{fffd}\u{fffd}.service",
            "/docker/ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            "/kubepods/burstable/podé8a3f2b-5a2b-4c1d-9e8f-123456789abcé",
            "/\0/\n/\t",
            long.as_str(),
            long_ids.as_str(),
        ];
        for path in odd {
            let _ = classify(path);
        }
        assert_eq!(classify(""), CgroupInfo::default());
        assert_eq!(classify("//"), CgroupInfo::default());
        assert_eq!(classify(&long), CgroupInfo::default());
        assert_eq!(
            classify(&long_ids).container.map(|c| c.runtime),
            Some(Docker)
        );
    }

    #[test]
    fn runtime_names() {
        for rt in [Docker, Containerd, CriO, Podman] {
            assert_eq!(Runtime::from_scheme(rt.as_str()), Some(rt));
        }
        assert_eq!(Runtime::from_scheme("unknown"), None);
        assert_eq!(Unknown.as_str(), "unknown");
    }
}

//! Attribution costs: reading a node-sized cgroup tree, classifying a path, and a labels
//! lookup once cached (what each published snapshot pays per cgroup row).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ksight_attribution::cgroups::CgroupPaths;
use ksight_attribution::container::classify;
use ksight_attribution::{Attributor, Filters};
use std::hint::black_box;
use std::os::unix::fs::MetadataExt;

/// 110 pods (the kubelet's default maximum) of 3 containers each, systemd driver, plus
/// 60 system services: 556 cgroups, as on a busy Kubernetes node.
fn node_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for pod in 0..110u32 {
        let uid = format!("{pod:08x}-5a2b-4c1d-9e8f-123456789abc");
        let slice = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        );
        for c in 0..3u32 {
            paths.push(format!(
                "{slice}/cri-containerd-{}.scope",
                format!("{pod:04x}{c:04x}").repeat(8)
            ));
        }
    }
    for s in 0..60 {
        paths.push(format!("system.slice/service-{s}.service"));
    }
    paths
}

fn attribution(c: &mut Criterion) {
    let root = std::env::temp_dir().join(format!("ksight-bench-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let paths = node_paths();
    for p in &paths {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    let ids: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(root.join(p)).unwrap().ino())
        .collect();

    let mut group = c.benchmark_group("attribution");
    let mut tree = CgroupPaths::new(Some(root.clone()));
    group.throughput(Throughput::Elements(tree.paths().len() as u64));
    group.bench_function("walk_node_tree", |b| b.iter(|| tree.refresh()));

    let full: Vec<String> = paths.iter().map(|p| format!("/{p}")).collect();
    group.throughput(Throughput::Elements(full.len() as u64));
    group.bench_function("classify", |b| {
        b.iter(|| {
            for p in &full {
                black_box(classify(black_box(p)));
            }
        })
    });

    let mut a = Attributor::new(
        CgroupPaths::new(Some(root.clone())),
        None,
        Filters::default(),
    );
    for &id in &ids {
        a.labels(id);
    }
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("labels_cached", |b| {
        b.iter(|| {
            for &id in &ids {
                black_box(a.labels(black_box(id)));
            }
        })
    });
    group.finish();
    std::fs::remove_dir_all(&root).unwrap();
}

criterion_group!(benches, attribution);
criterion_main!(benches);

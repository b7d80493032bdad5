use std::collections::{HashMap, HashSet};
use unreid::data::sampler::{PkSampler, SamplerError};
use unreid::random::Rng;

/// Labels: pid 0 in cameras 0,0,1,2 ; pid 1 only in camera 3 (3 images) ; pid 2 a singleton ;
/// pid 3 in cameras 0 (x5) and 1 (x1) ; one junk item (-1).
fn labels() -> Vec<(i32, u32)> {
    let mut l = vec![
        (0, 0),
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 3),
        (1, 3),
        (1, 3),
        (2, 5),
        (-1, 0),
    ];
    l.extend([(3, 0); 5]);
    l.push((3, 1));
    l
}

fn group_by_identity(stream: &[usize], labels: &[(i32, u32)], k: usize) -> Vec<Vec<usize>> {
    // A pass emits each identity's images contiguously: K of them, or 1 for a singleton.
    let mut groups = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let pid = labels[stream[i]].0;
        let len = if pid == 2 { 1 } else { k };
        groups.push(stream[i..i + len].to_vec());
        assert!(
            groups.last().unwrap().iter().all(|&j| labels[j].0 == pid),
            "{stream:?}"
        );
        i += len;
    }
    groups
}

#[test]
fn each_identity_gives_k_images_and_singletons_one() {
    let labels = labels();
    let sampler = PkSampler::new(&labels, 4).unwrap();
    assert_eq!(sampler.num_identities(), 4);
    let mut rng = Rng::new(1);
    for _ in 0..200 {
        let stream = sampler.pass(&mut rng);
        assert_eq!(stream.len(), 3 * 4 + 1);
        assert!(
            stream.iter().all(|&i| labels[i].0 >= 0),
            "junk is never sampled"
        );
        let groups = group_by_identity(&stream, &labels, 4);
        let pids: HashSet<i32> = groups.iter().map(|g| labels[g[0]].0).collect();
        assert_eq!(pids.len(), 4, "every identity once per pass");
    }
}

#[test]
fn others_come_from_other_cameras_when_there_are_any() {
    let labels = labels();
    let sampler = PkSampler::new(&labels, 4).unwrap();
    let mut rng = Rng::new(2);
    let mut pid3_anchor_cam0_rest = HashSet::new();
    for _ in 0..300 {
        let stream = sampler.pass(&mut rng);
        for g in group_by_identity(&stream, &labels, 4) {
            let (pid, anchor_cam) = labels[g[0]];
            match pid {
                // pid 1 was seen by one camera only: the others are its other images, never the anchor itself
                // when enough exist (2 candidates < K=4, so with replacement among those 2).
                1 => assert!(g[1..].iter().all(|&i| i != g[0]), "{g:?}"),
                0 | 3 => {
                    assert!(
                        g[1..].iter().all(|&i| labels[i].1 != anchor_cam),
                        "pid {pid} group {g:?}"
                    );
                    if pid == 3 && anchor_cam == 0 {
                        // Only one other-camera image: it is repeated (with replacement).
                        assert!(g[1..].iter().all(|&i| i == 14), "{g:?}");
                        pid3_anchor_cam0_rest.insert(g[1]);
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(pid3_anchor_cam0_rest.len(), 1);
}

#[test]
fn without_replacement_when_at_least_k_candidates() {
    // pid 0: anchor in camera 0, five images in other cameras >= K=4 -> three distinct others.
    let mut labels = vec![(0, 0)];
    labels.extend((1..=5).map(|c| (0, c)));
    let sampler = PkSampler::new(&labels, 4).unwrap();
    let mut rng = Rng::new(3);
    let mut seen = HashMap::new();
    for _ in 0..500 {
        let s = sampler.pass(&mut rng);
        let distinct: HashSet<usize> = s.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "no repeats: {s:?}");
        *seen.entry(s[0]).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 6, "every image can be the anchor");
    // Exactly K-1 = 3 candidates (< K): the reference then samples with replacement; repeats must occur.
    let labels = vec![(0, 0), (0, 1), (0, 2), (0, 3)];
    let sampler = PkSampler::new(&labels, 4).unwrap();
    let repeats = (0..200)
        .filter(|_| sampler.pass(&mut rng).iter().collect::<HashSet<_>>().len() < 4)
        .count();
    assert!(repeats > 0);
}

#[test]
fn camera_preference_can_be_turned_off() {
    // Anchor camera 0 has 4 images, camera 1 one image: with preference the others are always image 4.
    let labels = vec![(0, 0), (0, 0), (0, 0), (0, 0), (0, 1)];
    let on = PkSampler::new(&labels, 2).unwrap();
    let off = PkSampler::new(&labels, 2)
        .unwrap()
        .with_camera_preference(false);
    let mut rng = Rng::new(4);
    let mut same_cam_off = 0;
    for _ in 0..300 {
        let s = on.pass(&mut rng);
        if labels[s[0]].1 == 0 {
            assert_eq!(s[1], 4);
        }
        let s = off.pass(&mut rng);
        assert_ne!(
            s[0], s[1],
            "4 candidates >= K: without replacement, never the anchor"
        );
        same_cam_off += (labels[s[0]].1 == labels[s[1]].1) as usize;
    }
    assert!(
        same_cam_off > 50,
        "without preference, same-camera pairs happen: {same_cam_off}"
    );
}

#[test]
fn epochs_have_exactly_iters_batches_and_are_reproducible() {
    let labels: Vec<(i32, u32)> = (0..50).map(|i| (i / 5, (i % 3) as u32)).collect();
    let sampler = PkSampler::new(&labels, 4).unwrap();
    // One pass = 10 ids x 4 = 40 images = 2 batches of 16 (+8 dropped); 7 iterations need 4 passes.
    let batches = sampler.epoch_batches(9, 0, 7, 16).unwrap();
    assert_eq!(batches.len(), 7);
    assert!(batches.iter().all(|b| b.len() == 16));
    for b in &batches {
        // Batches are whole identity groups of K (16 = 4 x 4, passes start at a group boundary).
        let mut counts: HashMap<i32, usize> = HashMap::new();
        b.iter()
            .for_each(|&i| *counts.entry(labels[i].0).or_default() += 1);
        assert!(counts.values().all(|&c| c == 4), "{counts:?}");
    }
    assert_eq!(batches, sampler.epoch_batches(9, 0, 7, 16).unwrap());
    assert_ne!(batches, sampler.epoch_batches(9, 1, 7, 16).unwrap());
    assert_ne!(batches, sampler.epoch_batches(10, 0, 7, 16).unwrap());
    assert!(matches!(
        sampler.epoch_batches(9, 0, 1, 64),
        Err(SamplerError::TooFewImages {
            images: 40,
            batch_size: 64
        })
    ));
    assert!(matches!(
        PkSampler::new(&[(-1, 0)], 4),
        Err(SamplerError::NoIdentities)
    ));
    assert!(matches!(
        PkSampler::new(&labels, 0),
        Err(SamplerError::ZeroInstances)
    ));
}

/// Distinct images of each K-group over many passes, and whether any group repeated an image.
fn repeats_over_passes(labels: &[(i32, u32)], k: usize, passes: usize, seed: u64) -> usize {
    let sampler = PkSampler::new(labels, k).unwrap();
    let mut rng = Rng::new(seed);
    (0..passes)
        .filter(|_| {
            let s = sampler.pass(&mut rng);
            assert_eq!(s.len(), k, "one identity gives K images: {s:?}");
            s.iter().collect::<HashSet<_>>().len() < k
        })
        .count()
}

/// The reference (`RandomMultipleGallerySampler`) draws without replacement when the candidates
/// number at least K (`len(select) >= num_instances`), with replacement below that. Pins the
/// boundary on both paths: exactly K candidates never repeat, K-1 do.
#[test]
fn replacement_boundary_is_k_candidates_as_in_the_reference() {
    let k = 4;
    // Other-camera path: anchor cameras differ from all others only when every image has its
    // own camera; K+1 images in K+1 cameras -> exactly K other-camera candidates.
    let own_cameras: Vec<(i32, u32)> = (0..=k as u32).map(|c| (0, c)).collect();
    assert_eq!(
        repeats_over_passes(&own_cameras, k, 400, 11),
        0,
        "PK sampler: exactly K other-camera candidates must be drawn without replacement"
    );
    // K images, each in its own camera -> K-1 candidates: with replacement, so repeats occur.
    assert!(
        repeats_over_passes(&own_cameras[..k], k, 400, 12) > 0,
        "PK sampler: K-1 other-camera candidates must be drawn with replacement (the reference)"
    );
    // One camera: the candidates are the identity's other images.
    let one_camera = vec![(0, 7); k + 1];
    assert_eq!(
        repeats_over_passes(&one_camera, k, 400, 13),
        0,
        "PK sampler: exactly K same-camera candidates must be drawn without replacement"
    );
    assert!(
        repeats_over_passes(&one_camera[..k], k, 400, 14) > 0,
        "PK sampler: K-1 same-camera candidates must be drawn with replacement (the reference)"
    );
}

#[test]
fn singletons_and_one_camera_identities() {
    // pid 0 a singleton, pid 1 two images in one camera, pid 2 three images in one camera.
    let labels = vec![(0, 0), (1, 2), (1, 2), (2, 1), (2, 1), (2, 1)];
    let sampler = PkSampler::new(&labels, 3).unwrap();
    let mut rng = Rng::new(21);
    let mut anchors_of_singleton = HashSet::new();
    for _ in 0..200 {
        let s = sampler.pass(&mut rng);
        assert_eq!(s.len(), 1 + 3 + 3, "{s:?}");
        let pos = s.iter().position(|&i| i == 0).unwrap();
        anchors_of_singleton.insert(pos);
        let pid1: Vec<usize> = s.iter().copied().filter(|&i| labels[i].0 == 1).collect();
        assert_eq!(pid1.len(), 3);
        // pid 1 has one candidate besides the anchor: both others are that image.
        assert_eq!(pid1[1], pid1[2], "{s:?}");
        assert_ne!(
            pid1[0], pid1[1],
            "the anchor is never its own candidate: {s:?}"
        );
        let pid2: Vec<usize> = s.iter().copied().filter(|&i| labels[i].0 == 2).collect();
        assert_eq!(pid2.len(), 3);
        assert!(pid2[1..].iter().all(|&i| i != pid2[0]), "{s:?}");
    }
    assert!(anchors_of_singleton.len() > 1, "identity order is shuffled");
}

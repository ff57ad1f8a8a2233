//! End-to-end tests of the native pipeline on real photos from ../shared/data.

use facegate::error::FacegateError;
use facegate::image_io::{decode_image, read_image_file};
use facegate::pipeline::{Pipeline, PipelineOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| Pipeline::load_native(&PipelineOptions::default()).expect("models load"))
}

fn score(a: &str, b: &str) -> f32 {
    let p = pipeline();
    let ia = read_image_file(&data(&format!("faces/{a}"))).unwrap();
    let ib = read_image_file(&data(&format!("faces/{b}"))).unwrap();
    p.compare_images(&ia, &ib).unwrap().score
}

#[test]
fn same_person_scores_above_threshold() {
    let t = pipeline().calibration.threshold;
    for (a, b) in [
        ("obama.jpg", "obama2.jpg"),
        ("biden.jpg", "biden_biden2.jpg"),
        ("kit_harington_john1.jpeg", "kit_harington_john2.jpeg"),
        ("rose_leslie_img1.jpg", "rose_leslie_img2.jpg"),
    ] {
        let s = score(a, b);
        assert!(s >= t, "{a} vs {b}: {s} < {t}");
    }
}

#[test]
fn different_people_score_below_threshold() {
    let t = pipeline().calibration.threshold;
    for (a, b) in [
        ("obama.jpg", "biden.jpg"),
        ("kit_harington_john1.jpeg", "rose_leslie_img1.jpg"),
        ("obama2.jpg", "kit_harington_john2.jpeg"),
        ("biden.jpg", "alex_lacamoire_img1.jpg"),
        ("rose_leslie_img2.jpg", "lin-manuel-miranda.png"),
    ] {
        let s = score(a, b);
        assert!(s < t, "{a} vs {b}: {s} >= {t}");
    }
}

#[test]
fn two_people_gives_two_faces_with_landmarks_inside_boxes() {
    let img = read_image_file(&data("faces/two_people.jpg")).unwrap();
    let faces = pipeline().detect(&img).unwrap();
    assert_eq!(faces.len(), 2, "{faces:?}");
    for f in &faces {
        let [x, y, w, h] = f.bbox;
        for p in f.landmarks {
            assert!(p[0] >= x && p[0] <= x + w && p[1] >= y && p[1] <= y + h, "{p:?} outside {:?}", f.bbox);
        }
    }
}

#[test]
fn works_on_any_input_size() {
    let img = read_image_file(&data("faces/obama.jpg")).unwrap();
    for (w, h) in [(1280, 720), (120, 160), (400, 400)] {
        let resized = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
        let faces = pipeline().detect(&resized).unwrap();
        assert_eq!(faces.len(), 1, "{w}x{h}: {faces:?}");
        let [x, y, bw, bh] = faces[0].bbox;
        assert!(x >= 0.0 && y >= 0.0 && x + bw <= w as f32 && y + bh <= h as f32);
    }
}

#[test]
fn corrupt_file_is_a_typed_decode_error() {
    let bytes = std::fs::read(data("faces/obama.jpg")).unwrap();
    assert!(matches!(decode_image(&bytes[..bytes.len() / 3]), Err(FacegateError::ImageDecode(_))));
    assert!(matches!(decode_image(b"definitely not an image"), Err(FacegateError::ImageDecode(_))));
    assert!(matches!(decode_image(&[]), Err(FacegateError::ImageDecode(_))));
}

#[test]
fn faceless_image_is_no_face() {
    // a real photo with the face cut away: the top-left corner of a landscape frame
    let img = read_image_file(&data("faces/obama.jpg")).unwrap();
    let sky = image::imageops::crop_imm(&img, 0, 0, 150, 150).to_image();
    let p = pipeline();
    assert!(p.detect(&sky).unwrap().is_empty());
    let other = read_image_file(&data("faces/biden.jpg")).unwrap();
    assert_eq!(p.compare_images(&sky, &other).unwrap_err(), FacegateError::NoFace);
}

#[test]
fn tampered_model_is_rejected_by_sha256() {
    let mut bytes = facegate::manifest::read_verified("yunet_s_320").unwrap();
    bytes[1000] ^= 0x55;
    let err = facegate::manifest::verify("yunet_s_320", &bytes).unwrap_err();
    assert_eq!(err.code(), "model_integrity");
    let opts = PipelineOptions::default();
    let res = Pipeline::load(&opts, |name| {
        let mut b = facegate::manifest::read_verified(name)?;
        if name == opts.embedder {
            b.truncate(b.len() - 1);
        }
        Ok(b)
    });
    assert!(matches!(res, Err(FacegateError::ModelIntegrity { .. })));
}

#[test]
fn passive_liveness_separates_nuaa_print_attacks() {
    let p = pipeline();
    let text = std::fs::read_to_string(data("nuaa-dev/labels.csv")).unwrap();
    let (mut bona, mut attack) = (Vec::new(), Vec::new());
    // every 4th sample keeps the test quick while covering all subjects
    for line in text.lines().skip(1).step_by(4) {
        let f: Vec<&str> = line.split(',').collect();
        let img = read_image_file(&data(&format!("nuaa-dev/{}", f[0]))).unwrap();
        let (_, s) = p.passive_liveness(&img).unwrap();
        if f[1] == "bona_fide" { bona.push(s) } else { attack.push(s) }
    }
    let t = p.liveness.as_ref().unwrap().threshold;
    let apcer = attack.iter().filter(|s| **s >= t).count() as f32 / attack.len() as f32;
    let bpcer = bona.iter().filter(|s| **s < t).count() as f32 / bona.len() as f32;
    assert!(apcer <= 0.1 && bpcer <= 0.2, "APCER {apcer} BPCER {bpcer}");
}

#[test]
fn head_turn_and_eyes_from_the_mesh() {
    let p = pipeline();
    let img = read_image_file(&data("faces/rose_leslie_img1.jpg")).unwrap();
    let faces = p.detect(&img).unwrap();
    let face = facegate::detect::largest(&faces).unwrap();
    let mesh = p.mesh(&img, face).unwrap();
    assert_eq!(mesh.points.len(), 468);
    assert!(mesh.presence > 0.5);
    assert!(mesh.pose.yaw.abs() < 20.0, "{:?}", mesh.pose);
    assert!(mesh.eyes.left_openness > 0.5 && mesh.eyes.right_openness > 0.5, "{:?}", mesh.eyes);
    // Synthesise a head turn by squeezing the image-left half of the face:
    // the estimated yaw must move.
    let crop = image::imageops::crop_imm(&img, 0, 0, img.width(), img.height()).to_image();
    let mut turned = crop.clone();
    let [x, _, w, _] = face.bbox;
    let cx = (x + w / 2.0) as u32;
    let left = image::imageops::crop_imm(&crop, 0, 0, cx, crop.height()).to_image();
    let squeezed = image::imageops::resize(&left, cx * 3 / 5, crop.height(), image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut turned, &image::RgbImage::new(cx, crop.height()), 0, 0);
    image::imageops::replace(&mut turned, &squeezed, (cx - cx * 3 / 5) as i64, 0);
    let f2 = p.detect(&turned).unwrap();
    let f2 = facegate::detect::largest(&f2).expect("squeezed face still detected");
    let m2 = p.mesh(&turned, f2).unwrap();
    assert!((m2.pose.yaw - mesh.pose.yaw).abs() > 5.0, "{:?} vs {:?}", m2.pose, mesh.pose);
}

/// Protected templates on real photos: matching in the protected domain,
/// renewability, unlinkability across carriers, and the irreversibility claim.
#[test]
fn protected_templates_match_renew_unlink_and_resist_inversion() {
    use facegate::template::{StorageKey, TransformKey};
    let p = pipeline();
    let embed = |f: &str| p.embed_largest(&read_image_file(&data(&format!("faces/{f}"))).unwrap()).unwrap().1;
    let (o1, o2, b1) = (embed("obama.jpg"), embed("obama2.jpg"), embed("biden.jpg"));
    let dim = o1.0.len();
    let carrier_a = TransformKey::new(&[0xa1; 32], dim);
    let carrier_b = TransformKey::new(&[0xb2; 32], dim);
    let cal = &p.calibration;
    let (ta1, ta2, tab) = (carrier_a.protect(&o1).unwrap(), carrier_a.protect(&o2).unwrap(), carrier_a.protect(&b1).unwrap());
    assert!(ta1.compare(&ta2, cal).unwrap().same_person, "same person, same carrier");
    assert!(!ta1.compare(&tab, cal).unwrap().same_person, "different people");
    // the server's storage masking keeps every comparison
    let storage = StorageKey::new(&[0x5e; 32]);
    let (s1, s2) = (storage.seal(&ta1).unwrap(), storage.seal(&ta2).unwrap());
    assert_eq!(s1.hamming_fraction(&s2).unwrap(), ta1.hamming_fraction(&ta2).unwrap());

    // renewable and unlinkable: the same photo under another carrier's key is
    // as far from the first template as an unrelated face
    let tb1 = carrier_b.protect(&o1).unwrap();
    assert_ne!(tb1.bits, ta1.bits);
    assert!(ta1.compare(&tb1, cal).is_err(), "templates of different keys refuse to compare");
    let cross = ta1.clone().with_key_id(carrier_b.id()).hamming_fraction(&tb1).unwrap();
    assert!((0.42..=0.58).contains(&cross), "same photo across carriers differs in {cross} of the bits");

    // irreversibility: with the transform key, a device template back-projects
    // to an approximation of the embedding (the documented limit) but never
    // the embedding itself; a stored (masked) template back-projects to noise
    let approx = carrier_a.back_project(&ta1).unwrap();
    let c = approx.cosine(&o1);
    assert!(c > 0.5 && c < 0.99, "back-projection cosine {c}");
    let from_stored = carrier_a.back_project(&s1.clone()).unwrap();
    let leak = from_stored.cosine(&o1).abs();
    assert!(leak < 0.25, "a stored template leaked cosine {leak} without the storage key");
    eprintln!("back-projection cosine with transform key: {c:.3}; from stored template: {leak:.3}");
}

#[test]
fn mobilefacenet_in_tract_equals_the_tflite_reference() {
    use facegate::embed::{config, max_difference_to_reference, reference_outputs, Embedder};
    use facegate::manifest::read_verified;
    // float32 conversion vs the published TFLite file run by tflite-runtime
    // (models/tools/check_reference.py): equal to 1e-4, the converter's
    // PReLU repair is exact
    let expected = reference_outputs(include_str!("vectors/mobilefacenet_reference.json")).unwrap();
    assert_eq!(expected.len(), 2);
    let f32_model = Embedder::new(&read_verified("mobilefacenet_f32").unwrap(), config("mobilefacenet_f32").unwrap()).unwrap();
    let worst = max_difference_to_reference(&f32_model, &expected).unwrap();
    assert!(worst < 1e-4, "float32 model: max difference {worst}");
    // the shipped file stores 8-bit weights: close, not equal (its accuracy
    // is measured on lfw-dev instead)
    let shipped = Embedder::new(&read_verified("mobilefacenet").unwrap(), config("mobilefacenet").unwrap()).unwrap();
    let worst = max_difference_to_reference(&shipped, &expected).unwrap();
    assert!(worst > 1e-6 && worst < 0.05, "int8-stored model: max difference {worst}");
}

/// An ID document's photo is small, compressed and sometimes grey: the
/// face on a 112-px rendering (50-70 px wide) must still be found and
/// matched, with no quality gate refusing it.
#[test]
fn a_small_grey_id_style_photo_is_found_and_matched() {
    use facegate::image_io::IdPhotoStyle;
    let p = pipeline();
    let t = p.calibration.threshold;
    for (id, live, same) in [("lin-manuel-miranda.png", "alex-lacamoire.png", false), ("kit_harington_john1.jpeg", "kit_harington_john2.jpeg", true), ("obama.jpg", "obama2.jpg", true), ("obama.jpg", "biden.jpg", false)] {
        for grey in [false, true] {
            // an ID photo is a head-and-shoulders portrait: crop about twice
            // the face box around it, then render it small
            let full = read_image_file(&data(&format!("faces/{id}"))).unwrap();
            let face = facegate::detect::largest(&p.detect(&full).unwrap()).unwrap().clone();
            let [x, y, w, h] = face.bbox;
            let side = (w.max(h) * 2.0).min(full.width().min(full.height()) as f32);
            let left = (x + w / 2.0 - side / 2.0).clamp(0.0, full.width() as f32 - side) as u32;
            let top = (y + h / 2.0 - side / 2.0).clamp(0.0, full.height() as f32 - side) as u32;
            let portrait = image::imageops::crop_imm(&full, left, top, side as u32, side as u32).to_image();
            let style = IdPhotoStyle { long_side: 112, jpeg_quality: 30, grey };
            let small = style.render(&portrait).unwrap();
            assert!(small.width().max(small.height()) == 112);
            let score = p.compare_images(&small, &read_image_file(&data(&format!("faces/{live}"))).unwrap()).unwrap().score;
            assert_eq!(score >= t, same, "{id} as a 112-px ID photo (grey {grey}) vs {live}: score {score}, threshold {t}");
        }
    }
}

//! The target domains: MNIST-M-style digits (the recipe, its determinism, the built folder
//! and its reuse), the real MNIST-M folder loader, and the UCI 8x8 digits. Every fixture
//! is written by the tests themselves; the real data of `../shared/data` is used where the
//! machine has it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use candle_core::{Device, Tensor};
use gan_data::idx::{encode_images, encode_labels, IdxImages};
use gan_data::mnistm::{mnist_m_paths, read_card, CARD_FILE, RGB_LEN};
use gan_data::uci::{uci_split, UCI_TEST_COUNT};
use gan_data::{
    blend, compose, draw_crop, draw_crops, ensure_mnistm_style, load_mnist_m_folder,
    load_mnistm_style, load_mnistm_style_split, load_split, load_uci, load_uci_split,
    mnistm_style_dir, parse_uci_csv, read_photos, read_uci_digits, upsample_uci, Crop, Photo,
    SplitKind, Verify,
};
use image::{Rgb, RgbImage};

// ---------------------------------------------------------------- helpers

/// The error's whole chain, for matching.
fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn assert_err_has<T: std::fmt::Debug>(r: anyhow::Result<T>, parts: &[&str]) {
    let e = err_text(r);
    for p in parts {
        assert!(e.contains(p), "error {e:?} does not mention {p:?}");
    }
}

/// A small MNIST of `n_train` and `n_test` digits with labels `i % 10`, raw IDX files.
fn write_mnist(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, x, y, salt) in [
        (
            n_train,
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            0,
        ),
        (
            n_test,
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            7,
        ),
    ] {
        let pixels = (0..n * 784)
            .map(|p| ((p * 37 + salt * 11 + p / 784 * 5) % 256) as u8)
            .collect();
        let images = IdxImages {
            n,
            rows: 28,
            cols: 28,
            pixels,
        };
        std::fs::write(dir.join(x), encode_images(&images)).unwrap();
        let labels: Vec<u8> = (0..n).map(|i| ((i + salt) % 10) as u8).collect();
        std::fs::write(dir.join(y), encode_labels(&labels)).unwrap();
    }
}

/// A photo of smoothly varying colours, different for each `salt`.
fn photo_image(w: u32, h: u32, salt: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 5 + salt * 40) % 256) as u8,
            ((y * 7 + salt * 13) % 256) as u8,
            ((x + y + salt * 90) % 256) as u8,
        ])
    })
}

/// A folder of three photos: two PNGs and a JPEG.
fn write_photos(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    photo_image(40, 32, 0).save(dir.join("a.png")).unwrap();
    photo_image(28, 30, 1).save(dir.join("b.png")).unwrap();
    photo_image(64, 48, 2).save(dir.join("c.jpg")).unwrap();
    std::fs::write(dir.join("README.txt"), "not a photo, left alone").unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    mnist: PathBuf,
    photos: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let mnist = tmp.path().join("mnist");
    let photos = tmp.path().join("photos");
    write_mnist(&mnist, 50, 20);
    write_photos(&photos);
    Fixture {
        mnist,
        photos,
        root: tmp.path().join("data"),
        _tmp: tmp,
    }
}

/// Every file of a folder, by name.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn to_u8(t: &Tensor) -> Vec<u8> {
    // Back from [-1, 1] to bytes: exact, as p / 127.5 - 1 is exact enough to round back.
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| ((v + 1.0) * 127.5).round() as u8)
        .collect()
}

// ---------------------------------------------------------------- the recipe

#[test]
fn blend_matches_hand_computed_pixels() {
    // 30 wide, 29 high: pixel (x, y) is (8x, 8y, 200).
    let (w, h) = (30usize, 29usize);
    let rgb = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(8 * x) as u8, (8 * y) as u8, 200]))
        .collect();
    let photo = Photo::from_rgb("hand", w, h, rgb).unwrap();
    let mut digit = [0u8; 784];
    digit[0] = 255; // row 0, column 0
    digit[28 + 2] = 100; // row 1, column 2
    digit[27 * 28 + 27] = 50; // the last pixel
    let out = blend(&digit, &photo, 2, 1).unwrap();
    let px = |r: usize, c: usize| &out[(r * 28 + c) * 3..][..3];
    // Crop pixel (r, c) is photo pixel (x + c, y + r) = (2 + c, 1 + r).
    assert_eq!(px(0, 0), [239, 247, 55]); // |(16, 8, 200) - 255|
    assert_eq!(px(1, 2), [68, 84, 100]); // |(32, 16, 200) - 100|
    assert_eq!(px(27, 27), [182, 174, 150]); // |(232, 224, 200) - 50|
    assert_eq!(px(5, 5), [56, 48, 200]); // no ink: the photo itself, (8 * 7, 8 * 6, 200)
                                         // The crop at the far corner still fits; one more column does not.
    assert!(blend(&digit, &photo, 2, 1).is_ok());
    assert!(blend(&digit, &photo, w - 28, h - 28).is_ok());
    assert_err_has(blend(&digit, &photo, w - 27, 0), &["hand", "column 3"]);
    assert_err_has(blend(&digit, &photo, 0, h - 27), &["hand", "row 2"]);
    assert_err_has(blend(&digit[..783], &photo, 0, 0), &["783"]);

    // `compose` applies the same blend to each digit with its own crop.
    let two = [digit, [255u8; 784]].concat();
    let crops = [
        Crop {
            photo: 0,
            x: 2,
            y: 1,
        },
        Crop {
            photo: 0,
            x: 0,
            y: 0,
        },
    ];
    let both = compose(&two, std::slice::from_ref(&photo), &crops).unwrap();
    assert_eq!(both.len(), 2 * RGB_LEN);
    assert_eq!(&both[..RGB_LEN], &out[..]);
    assert_eq!(&both[RGB_LEN..RGB_LEN + 3], [255, 255, 55]); // |(0, 0, 200) - 255|
    let bad = [Crop {
        photo: 1,
        x: 0,
        y: 0,
    }];
    assert_err_has(
        compose(&digit, std::slice::from_ref(&photo), &bad),
        &["photo 1"],
    );
}

#[test]
fn photos_smaller_than_a_crop_are_refused() {
    assert_err_has(
        Photo::from_rgb("tiny", 20, 20, vec![0; 20 * 20 * 3]),
        &["tiny", "20x20"],
    );
    assert_err_has(
        Photo::from_rgb("flat", 40, 27, vec![0; 40 * 27 * 3]),
        &["flat", "40x27"],
    );
    assert_err_has(
        Photo::from_rgb("short", 28, 28, vec![0; 10]),
        &["short", "10 bytes"],
    );
    assert!(Photo::from_rgb("ok", 28, 28, vec![0; 28 * 28 * 3]).is_ok());
}

#[test]
fn draws_depend_on_seed_split_and_index_only() {
    let sizes = [(40, 32), (28, 30), (600, 400)];
    let photos: Vec<Photo> = sizes
        .iter()
        .map(|&(w, h)| Photo::from_rgb("p", w, h, vec![0; w * h * 3]).unwrap())
        .collect();
    let a = draw_crops(7, SplitKind::Train, 3000, &photos).unwrap();
    assert_eq!(a, draw_crops(7, SplitKind::Train, 3000, &photos).unwrap());
    assert_ne!(a, draw_crops(8, SplitKind::Train, 3000, &photos).unwrap());
    let test = draw_crops(7, SplitKind::Test, 3000, &photos).unwrap();
    assert_ne!(a, test, "train and test use different streams");
    // Image i's crop is the same drawn alone: it depends on i, not on the images before.
    for i in [0, 1, 17, 2999] {
        assert_eq!(Some(a[i]), draw_crop(7, SplitKind::Train, i, &sizes));
    }
    // Every photo is used, about equally; every crop fits; positions spread over the photo.
    let mut per_photo = [0usize; 3];
    for c in &a {
        let (w, h) = sizes[c.photo];
        assert!(c.x + 28 <= w && c.y + 28 <= h, "{c:?}");
        per_photo[c.photo] += 1;
    }
    assert!(per_photo.iter().all(|&k| k > 850), "{per_photo:?}");
    let big: Vec<_> = a.iter().filter(|c| c.photo == 2).collect();
    assert!(big.iter().any(|c| c.x > 500) && big.iter().any(|c| c.x < 70));
    assert!(big.iter().any(|c| c.y > 330) && big.iter().any(|c| c.y < 40));
    // The 28x30 photo has one column and three rows of crops: all three rows are drawn.
    let mut rows: Vec<_> = a
        .iter()
        .filter(|c| c.photo == 1)
        .map(|c| (c.x, c.y))
        .collect();
    rows.sort();
    rows.dedup();
    assert_eq!(rows, [(0, 0), (0, 1), (0, 2)]);
    assert!(draw_crops(7, SplitKind::Train, 1, &[]).is_err());
    assert_eq!(draw_crop(7, SplitKind::Train, 0, &[(20, 40)]), None);
}

// ---------------------------------------------------------------- the built folder

#[test]
fn builds_loads_and_follows_the_recipe() {
    let f = fixture();
    let (data, set) =
        load_mnistm_style(&f.mnist, &f.photos, &f.root, 3, Verify::Skip, &Device::Cpu).unwrap();
    assert!(set.built.is_some());
    assert_eq!(set.dir, mnistm_style_dir(&f.root, 3));
    assert_eq!(set.dir, f.root.join("mnistm-style-seed3"));
    let names: Vec<_> = files_of(&set.dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "card.json",
            "test-images-idx4-ubyte.gz",
            "test-labels-idx1-ubyte.gz",
            "train-images-idx4-ubyte.gz",
            "train-labels-idx1-ubyte.gz"
        ],
        "no temporary file left"
    );
    // The card: seed, recipe, photos in file-name order with their hashes, counts.
    let card = read_card(&set.dir).unwrap();
    assert_eq!(card, set.card);
    assert_eq!(card.seed, 3);
    assert!(card.recipe.contains("|p - d|"));
    let photo_names: Vec<_> = card.photos.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(photo_names, ["a.png", "b.png", "c.jpg"]);
    let a_sha = gan_data::mnist::sha256_hex(&std::fs::read(f.photos.join("a.png")).unwrap());
    assert_eq!(card.photos[0].sha256, a_sha);
    assert_eq!((card.photos[2].width, card.photos[2].height), (64, 48));
    let counts: Vec<_> = card
        .splits
        .iter()
        .map(|s| (s.split.as_str(), s.count))
        .collect();
    assert_eq!(counts, [("train", 50), ("test", 20)]);
    for s in &card.splits {
        for out in [&s.images, &s.labels] {
            let bytes = std::fs::read(set.dir.join(&out.file)).unwrap();
            assert_eq!(gan_data::mnist::sha256_hex(&bytes), out.sha256);
        }
    }

    // Shapes, range, labels and order follow MNIST's.
    let photos = read_photos(&f.photos).unwrap();
    let sizes: Vec<_> = photos.iter().map(|p| (p.width(), p.height())).collect();
    for (kind, split, n) in [
        (SplitKind::Train, &data.train, 50),
        (SplitKind::Test, &data.test, 20),
    ] {
        assert_eq!(split.images.dims(), &[n, 3, 28, 28]);
        assert_eq!(split.channels(), 3);
        let mnist = load_split(&f.mnist, kind, Verify::Skip, &Device::Cpu).unwrap();
        assert_eq!(split.labels_u8, mnist.labels_u8);
        assert_eq!(
            split.labels.to_vec1::<u32>().unwrap(),
            mnist
                .labels_u8
                .iter()
                .map(|&l| u32::from(l))
                .collect::<Vec<_>>()
        );
        // Every image is the recipe on its MNIST digit with its drawn crop, CHW.
        let digits = to_u8(&mnist.images);
        let got = to_u8(&split.images);
        for i in 0..n {
            let crop = draw_crop(3, kind, i, &sizes).unwrap();
            let want = blend(
                &digits[i * 784..][..784],
                &photos[crop.photo],
                crop.x,
                crop.y,
            )
            .unwrap();
            let chw: Vec<u8> = (0..3)
                .flat_map(|k| (0..784).map(move |p| want[p * 3 + k]))
                .collect();
            assert_eq!(
                &got[i * RGB_LEN..][..RGB_LEN],
                &chw[..],
                "{kind:?} image {i}"
            );
        }
        let min = split.images.min_all().unwrap().to_scalar::<f32>().unwrap();
        let max = split.images.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((-1.0..=1.0).contains(&min) && (-1.0..=1.0).contains(&max));
    }
    // Loading a split from the folder, or through the report, gives the same.
    let test = load_mnistm_style_split(&set.dir, SplitKind::Test, &Device::Cpu).unwrap();
    assert_eq!(to_u8(&test.images), to_u8(&data.test.images));
    let train = set.load(SplitKind::Train, &Device::Cpu).unwrap();
    assert_eq!(to_u8(&train.images), to_u8(&data.train.images));
    assert_eq!(train.labels_u8, data.train.labels_u8);
}

#[test]
fn builds_are_byte_identical_for_a_seed_and_differ_across_seeds() {
    let f = fixture();
    let other_root = f.root.with_file_name("data2");
    let a = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 11, Verify::Skip).unwrap();
    let b = ensure_mnistm_style(&f.mnist, &f.photos, &other_root, 11, Verify::Skip).unwrap();
    assert!(a.built.is_some() && b.built.is_some());
    assert_eq!(files_of(&a.dir), files_of(&b.dir), "two builds of seed 11");
    let c = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 12, Verify::Skip).unwrap();
    assert_ne!(a.dir, c.dir);
    let images = |dir: &Path| std::fs::read(dir.join("train-images-idx4-ubyte.gz")).unwrap();
    assert_ne!(images(&a.dir), images(&c.dir), "seed 12 draws other crops");
    let labels = |dir: &Path| std::fs::read(dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(
        labels(&a.dir),
        labels(&c.dir),
        "labels are MNIST's whatever the seed"
    );
}

#[test]
fn reuses_the_folder_and_rebuilds_when_an_input_changes() {
    let f = fixture();
    let first = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert!(first.built.is_some());
    let images = first.dir.join("train-images-idx4-ubyte.gz");
    // Back-date the file: a rebuild would write it anew, with a fresh time.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let set_old = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap()
    };
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    set_old(&images);

    let again = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert_eq!(again.built, None, "same seed and inputs: reused");
    assert_eq!(mtime(&images), old, "not rewritten");
    assert_eq!(again.card, first.card);

    // A photo changes: rebuilt, and the card records the new photo.
    photo_image(40, 32, 9).save(f.photos.join("a.png")).unwrap();
    let changed = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    let why = changed.built.expect("rebuilt after a photo changed");
    assert!(why.contains("photos"), "{why}");
    assert_ne!(mtime(&images), old);
    assert_ne!(changed.card.photos[0].sha256, first.card.photos[0].sha256);
    assert_ne!(
        changed.card.splits[0].images.sha256,
        first.card.splits[0].images.sha256
    );
    let settled = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert_eq!(settled.built, None);

    // A photo added: rebuilt.
    photo_image(30, 30, 4).save(f.photos.join("d.png")).unwrap();
    let added = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert!(added.built.is_some());
    assert_eq!(added.card.photos.len(), 4);

    // An output damaged: caught by its hash, rebuilt, and loading alone refuses it.
    let mut bytes = std::fs::read(&images).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&images, &bytes).unwrap();
    assert_err_has(
        load_mnistm_style_split(&added.dir, SplitKind::Train, &Device::Cpu),
        &["train-images-idx4-ubyte.gz", "SHA-256"],
    );
    let repaired = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    let why = repaired.built.expect("rebuilt after damage");
    assert!(why.contains("SHA-256"), "{why}");
    assert!(load_mnistm_style_split(&added.dir, SplitKind::Train, &Device::Cpu).is_ok());

    // The MNIST digits change: rebuilt.
    write_mnist(&f.mnist, 51, 20);
    let more = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert!(more.built.unwrap().contains("MNIST"));
    assert_eq!(more.card.splits[0].count, 51);

    // A missing or garbled card: rebuilt.
    std::fs::write(first.dir.join(CARD_FILE), "{ not json").unwrap();
    let garbled = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 5, Verify::Skip).unwrap();
    assert!(garbled.built.is_some());
    assert_eq!(read_card(&first.dir).unwrap(), more.card);
}

#[test]
fn bad_photo_folders_are_errors_that_name_the_problem() {
    let f = fixture();
    let build = |photos: &Path| ensure_mnistm_style(&f.mnist, photos, &f.root, 0, Verify::Skip);
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("nowhere");
    assert_err_has(
        build(&missing),
        &["nowhere", "cannot read the photo folder"],
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_err_has(build(&empty), &["empty", "no photos"]);

    let no_images = tmp.path().join("no-images");
    std::fs::create_dir(&no_images).unwrap();
    std::fs::write(no_images.join("notes.txt"), "hello").unwrap();
    std::fs::write(no_images.join(".hidden.png"), "x").unwrap();
    assert_err_has(build(&no_images), &["no-images", "no photos"]);

    let garbage = tmp.path().join("garbage");
    write_photos(&garbage);
    std::fs::write(garbage.join("broken.png"), b"this is not a PNG at all").unwrap();
    assert_err_has(build(&garbage), &["broken.png", "cannot decode"]);
    assert_err_has(read_photos(&garbage), &["broken.png", "cannot decode"]);

    let small = tmp.path().join("small");
    write_photos(&small);
    photo_image(20, 20, 3)
        .save(small.join("small.png"))
        .unwrap();
    assert_err_has(
        build(&small),
        &["small.png", "20x20", "smaller than the 28x28"],
    );

    let narrow = tmp.path().join("narrow");
    std::fs::create_dir(&narrow).unwrap();
    photo_image(27, 300, 3)
        .save(narrow.join("narrow.jpg"))
        .unwrap();
    assert_err_has(build(&narrow), &["narrow.jpg", "27x300"]);

    // Nothing was left behind by the failed builds, and a good folder still builds.
    assert!(!mnistm_style_dir(&f.root, 0).join(CARD_FILE).exists());
    assert!(build(&f.photos).is_ok());
    // Canonical verification of a non-canonical MNIST is refused, naming the file.
    let canon = ensure_mnistm_style(&f.mnist, &f.photos, &f.root, 1, Verify::Canonical);
    assert_err_has(canon, &["train-images-idx3-ubyte", "SHA-256 mismatch"]);
}

// ---------------------------------------------------------------- the real MNIST-M folder

/// A small MNIST-M folder: `n` images per split, image i of colour (i, 2i, 3i) with a
/// white pixel at row 1, column 2; label (i * 3) % 10.
fn write_mnist_m(root: &Path, n: usize) {
    for kind in [SplitKind::Train, SplitKind::Test] {
        let (labels, images) = mnist_m_paths(root, kind);
        std::fs::create_dir_all(&images).unwrap();
        let mut text = String::new();
        for i in 0..n {
            let file = format!("{i:08}.png");
            let v = i as u8;
            let mut img = RgbImage::from_pixel(28, 28, Rgb([v, 2 * v, 3 * v]));
            img.put_pixel(2, 1, Rgb([255, 255, 255]));
            img.save(images.join(&file)).unwrap();
            text.push_str(&format!("{file} {}\n", (i * 3) % 10));
        }
        std::fs::write(labels, text).unwrap();
    }
}

#[test]
fn loads_a_real_mnist_m_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mnist_m");
    write_mnist_m(&root, 12);
    for kind in [SplitKind::Train, SplitKind::Test] {
        let split = load_mnist_m_folder(&root, kind, &Device::Cpu).unwrap();
        assert_eq!(split.images.dims(), &[12, 3, 28, 28]);
        let want: Vec<u8> = (0..12).map(|i| ((i * 3) % 10) as u8).collect();
        assert_eq!(split.labels_u8, want);
        let px = to_u8(&split.images);
        // Image 5: red plane 5, green 10, blue 15; the white pixel in each plane.
        let img = &px[5 * RGB_LEN..][..RGB_LEN];
        assert_eq!([img[0], img[784], img[2 * 784]], [5, 10, 15]);
        assert_eq!([img[30], img[784 + 30], img[2 * 784 + 30]], [255, 255, 255]);
    }
}

#[test]
fn bad_mnist_m_folders_are_errors_that_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mnist_m");
    write_mnist_m(&root, 4);
    let load = |kind| load_mnist_m_folder(&root, kind, &Device::Cpu);
    let (train_labels, train_dir) = mnist_m_paths(&root, SplitKind::Train);
    let (test_labels, _) = mnist_m_paths(&root, SplitKind::Test);
    let good = std::fs::read_to_string(&train_labels).unwrap();

    std::fs::remove_file(&test_labels).unwrap();
    assert_err_has(
        load(SplitKind::Test),
        &["mnist_m_test_labels.txt", "cannot read"],
    );

    std::fs::write(&train_labels, format!("{good}00000099.png 3\n")).unwrap();
    assert_err_has(
        load(SplitKind::Train),
        &["line 5", "00000099.png", "does not exist"],
    );
    std::fs::write(&train_labels, format!("{good}00000001.png 12\n")).unwrap();
    assert_err_has(load(SplitKind::Train), &["line 5", "\"12\"", "not a digit"]);
    std::fs::write(&train_labels, format!("00000000.png x\n{good}")).unwrap();
    assert_err_has(load(SplitKind::Train), &["line 1", "\"x\""]);
    std::fs::write(&train_labels, format!("{good}00000001.png\n")).unwrap();
    assert_err_has(load(SplitKind::Train), &["line 5", "expected"]);
    std::fs::write(&train_labels, format!("{good}../escape.png 1\n")).unwrap();
    assert_err_has(load(SplitKind::Train), &["line 5", "not a plain file name"]);
    std::fs::write(&train_labels, "\n\n").unwrap();
    assert_err_has(
        load(SplitKind::Train),
        &["mnist_m_train_labels.txt", "no labels"],
    );
    std::fs::write(&train_labels, &good).unwrap();
    assert!(load(SplitKind::Train).is_ok());

    let img = train_dir.join("00000002.png");
    RgbImage::new(32, 28).save(&img).unwrap();
    assert_err_has(load(SplitKind::Train), &["00000002.png", "32x28", "28x28"]);
    image::GrayImage::new(28, 28).save(&img).unwrap();
    assert_err_has(load(SplitKind::Train), &["00000002.png", "L8", "8-bit RGB"]);
    image::RgbaImage::new(28, 28).save(&img).unwrap();
    assert_err_has(load(SplitKind::Train), &["00000002.png", "Rgba8"]);
    std::fs::write(&img, b"garbage").unwrap();
    assert_err_has(load(SplitKind::Train), &["00000002.png", "cannot decode"]);
}

// ---------------------------------------------------------------- UCI digits

/// A CSV row: pixel j is (j + i) % 17, label i % 10.
fn uci_row(i: usize) -> String {
    let mut fields: Vec<String> = (0..64).map(|j| ((j + i) % 17).to_string()).collect();
    fields.push((i % 10).to_string());
    fields.join(",")
}

fn write_gz(path: &Path, text: &str) {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

#[test]
fn parses_uci_rows_and_rejects_bad_ones() {
    let text = format!("{}\n{}\n\n{}\n", uci_row(0), uci_row(1), uci_row(2));
    let d = parse_uci_csv(&text, "digits.csv").unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.labels, [0, 1, 2]);
    assert_eq!(d.pixels[1][0], 1);
    assert_eq!(d.pixels[2][15], 0); // (15 + 2) % 17
    assert_eq!(d.pixels[0][16], 16);
    // Floats with whole values, as some exports write them.
    let floats = uci_row(3)
        .split(',')
        .map(|f| format!("{f}.0"))
        .collect::<Vec<_>>();
    assert_eq!(parse_uci_csv(&floats.join(","), "f").unwrap().labels, [3]);

    let with = |line: String| format!("{}\n{}\n{line}\n", uci_row(0), uci_row(1));
    let row2 = uci_row(2);
    let short = &row2[..row2.rfind(',').unwrap()];
    assert_err_has(
        parse_uci_csv(&with(short.to_string()), "digits.csv"),
        &["digits.csv line 3", "64 fields", "65"],
    );
    let bad_pixel = uci_row(2).replacen("2,", "17,", 1);
    assert_err_has(
        parse_uci_csv(&with(bad_pixel), "d"),
        &["d line 3", "pixel 1 ", "\"17\"", "0..16"],
    );
    let mut f: Vec<String> = uci_row(2).split(',').map(String::from).collect();
    f[9] = "-1".into();
    assert_err_has(
        parse_uci_csv(&with(f.join(",")), "d"),
        &["line 3", "pixel 10 (row 1, column 1)", "\"-1\""],
    );
    f[9] = "a".into();
    assert_err_has(parse_uci_csv(&with(f.join(",")), "d"), &["line 3", "\"a\""]);
    f[9] = "3.5".into();
    assert_err_has(
        parse_uci_csv(&with(f.join(",")), "d"),
        &["line 3", "\"3.5\""],
    );
    f[9] = "1".into();
    f[64] = "10".into();
    assert_err_has(
        parse_uci_csv(&with(f.join(",")), "d"),
        &["line 3", "label \"10\""],
    );
    assert_err_has(parse_uci_csv("\n\n", "e.csv"), &["e.csv", "no rows"]);

    // Raw or gzip, told by content.
    let tmp = tempfile::tempdir().unwrap();
    let gz = tmp.path().join("digits.csv.gz");
    write_gz(&gz, &text);
    assert_eq!(read_uci_digits(&gz, Verify::Skip).unwrap(), d);
    let raw = tmp.path().join("digits.csv");
    std::fs::write(&raw, &text).unwrap();
    assert_eq!(read_uci_digits(&raw, Verify::Skip).unwrap(), d);
    assert_err_has(
        read_uci_digits(&raw, Verify::Canonical),
        &["digits.csv", "SHA-256 mismatch"],
    );
    assert_err_has(
        read_uci_digits(&tmp.path().join("none.csv"), Verify::Skip),
        &["none.csv"],
    );
}

#[test]
fn upsampling_is_smooth_and_framed_like_mnist() {
    let frame = |r: usize, c: usize| !(4..24).contains(&r) || !(4..24).contains(&c);
    // The 8x8 frame fills the 20x20 box in the middle; the 4-pixel margin is background.
    for (v, inside) in [(0u8, -1.0f32), (16, 1.0), (8, 0.0)] {
        let up = upsample_uci(&[v; 64]);
        for (i, &x) in up.iter().enumerate() {
            let want = if frame(i / 28, i % 28) { -1.0 } else { inside };
            assert_eq!(x, want, "value {v}, pixel {i}");
        }
    }
    // One lit pixel in the middle (row 3, column 4): a smooth bilinear bump around it.
    let mut px = [0u8; 64];
    px[3 * 8 + 4] = 16;
    let up = upsample_uci(&px);
    // Bilinear, pixel-centre aligned: output (r, c) samples the source at
    // ((r - 4 + 0.5) * 8/20 - 0.5, ...), and a lone pixel at (3, 4) weighs the tent
    // (1 - |dr|) (1 - |dc|) there.
    let tent = |o: usize, at: f32| {
        let s = (o as f32 - 4.0 + 0.5) * 0.4 - 0.5;
        (1.0 - (s - at).abs()).max(0.0)
    };
    for r in 0..28 {
        for c in 0..28 {
            let want = if frame(r, c) {
                -1.0
            } else {
                tent(r, 3.0) * tent(c, 4.0) * 2.0 - 1.0
            };
            assert!((up[r * 28 + c] - want).abs() < 1e-5, "({r}, {c})");
        }
    }
    // Peaked at the output pixel nearest the source pixel's centre, (12, 15): 0.9 * 0.9.
    let best = (0..784).max_by(|&a, &b| up[a].total_cmp(&up[b])).unwrap();
    assert_eq!((best / 28, best % 28), (12, 15));
    assert!((up[best] - (0.81 * 2.0 - 1.0)).abs() < 1e-5);
    // Edges are clamped: a lit corner pixel fills the box's corner fully.
    let mut corner = [0u8; 64];
    corner[0] = 16;
    let up = upsample_uci(&corner);
    assert_eq!((up[4 * 28 + 4], up[3 * 28 + 3]), (1.0, -1.0));
}

#[test]
fn the_uci_split_is_fixed_stratified_and_disjoint() {
    let labels: Vec<u8> = (0..60).map(|i| (i % 10) as u8).collect();
    let (train, test) = uci_split(&labels, 20).unwrap();
    assert_eq!((train.len(), test.len()), (40, 20));
    assert_eq!(
        uci_split(&labels, 20).unwrap(),
        (train.clone(), test.clone())
    );
    let mut all = [train.clone(), test.clone()].concat();
    all.sort();
    assert_eq!(all, (0..60).collect::<Vec<_>>(), "disjoint and complete");
    assert!(train.windows(2).all(|w| w[0] < w[1]) && test.windows(2).all(|w| w[0] < w[1]));
    let mut per_class = [0; 10];
    for &i in &test {
        per_class[labels[i] as usize] += 1;
    }
    assert_eq!(per_class, [2; 10], "stratified");
    // Not simply the first rows of each class.
    assert_ne!(test, (0..20).collect::<Vec<_>>());
    // Uneven classes, 22 and 8: shares 7.33 and 2.67, so the row left over goes to the larger
    // remainder: 7 and 3.
    let uneven: Vec<u8> = (0..30).map(|i| if i < 22 { 0 } else { 1 }).collect();
    let (_, t) = uci_split(&uneven, 10).unwrap();
    assert_eq!(t.iter().filter(|&&i| uneven[i] == 0).count(), 7);
    assert_err_has(uci_split(&labels, 60), &["60"]);

    // The loader: the 500 held out, the rest for training, as [n, 1, 28, 28] in [-1, 1].
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("digits.csv.gz");
    let text: Vec<String> = (0..620).map(uci_row).collect();
    write_gz(&path, &text.join("\n"));
    let d = load_uci(&path, Verify::Skip, &Device::Cpu).unwrap();
    assert_eq!(d.train.images.dims(), &[120, 1, 28, 28]);
    assert_eq!(d.test.images.dims(), &[UCI_TEST_COUNT, 1, 28, 28]);
    assert_eq!(d.train.channels(), 1);
    let test_only = load_uci_split(&path, SplitKind::Test, Verify::Skip, &Device::Cpu).unwrap();
    assert_eq!(test_only.labels_u8, d.test.labels_u8);
    let few = tmp.path().join("few.csv");
    std::fs::write(&few, text[..100].join("\n")).unwrap();
    assert_err_has(
        load_uci(&few, Verify::Skip, &Device::Cpu),
        &["few.csv", "500"],
    );
}

// ---------------------------------------------------------------- real data

fn range(t: &Tensor) -> (f32, f32) {
    (
        t.min_all().unwrap().to_scalar::<f32>().unwrap(),
        t.max_all().unwrap().to_scalar::<f32>().unwrap(),
    )
}

#[test]
fn real_mnistm_style_from_the_shared_photos() {
    let Some(shared) = gan_data::mnist::shared_data_dir() else {
        eprintln!("skipped: no ../shared");
        return;
    };
    let mnist = gan_data::mnist::shared_mnist_dir().unwrap();
    let photos = shared.join("backgrounds");
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let set = ensure_mnistm_style(mnist, &photos, tmp.path(), 0, Verify::Canonical).unwrap();
    let built_in = start.elapsed();
    assert!(set.built.is_some());
    let start = Instant::now();
    let (data, again) = load_mnistm_style(
        mnist,
        &photos,
        tmp.path(),
        0,
        Verify::Canonical,
        &Device::Cpu,
    )
    .unwrap();
    let reused_in = start.elapsed();
    assert_eq!(again.built, None);
    eprintln!(
        "MNIST-M-style (70,000 images): built in {built_in:.2?}, reused and loaded in \
         {reused_in:.2?}"
    );
    for s in &set.card.splits {
        for out in [&s.images, &s.labels] {
            let len = std::fs::metadata(set.dir.join(&out.file)).unwrap().len();
            eprintln!("{}: {:.1} MB", out.file, len as f64 / 1e6);
        }
    }
    let photo_names: Vec<_> = set.card.photos.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(
        photo_names,
        ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    );
    for (kind, split, n) in [
        (SplitKind::Train, &data.train, 60_000),
        (SplitKind::Test, &data.test, 10_000),
    ] {
        assert_eq!(split.images.dims(), &[n, 3, 28, 28]);
        let m = load_split(mnist, kind, Verify::Canonical, &Device::Cpu).unwrap();
        assert_eq!(split.labels_u8, m.labels_u8, "labels follow MNIST's");
        let (min, max) = range(&split.images);
        assert_eq!((min, max), (-1.0, 1.0));
    }
    // Every photo is used, about a quarter of the time.
    let sizes: Vec<_> = set
        .card
        .photos
        .iter()
        .map(|p| (p.width, p.height))
        .collect();
    let mut per_photo = [0usize; 4];
    for i in 0..60_000 {
        per_photo[draw_crop(0, SplitKind::Train, i, &sizes).unwrap().photo] += 1;
    }
    assert!(per_photo.iter().all(|&k| k > 14_000), "{per_photo:?}");
    if let Some(dir) = std::env::var_os("GAN_DATA_GRID_DIR") {
        let dir = PathBuf::from(dir);
        save_grid(&data.train.images, &dir.join("mnistm-style-train.png"));
        eprintln!("wrote {}", dir.join("mnistm-style-train.png").display());
    }
}

#[test]
fn real_uci_digits() {
    let Some(shared) = gan_data::mnist::shared_data_dir() else {
        eprintln!("skipped: no ../shared");
        return;
    };
    let path = shared.join("uci-digits/digits.csv.gz");
    let d = load_uci(&path, Verify::Canonical, &Device::Cpu).unwrap();
    assert_eq!(d.train.images.dims(), &[1297, 1, 28, 28]);
    assert_eq!(d.test.images.dims(), &[500, 1, 28, 28]);
    let counts = |labels: &[u8]| {
        let mut counts = [0usize; 10];
        for &l in labels {
            counts[l as usize] += 1;
        }
        counts
    };
    let all = counts(&[&d.train.labels_u8[..], &d.test.labels_u8[..]].concat());
    assert_eq!(all, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    for split in [&d.train, &d.test] {
        assert_eq!(range(&split.images), (-1.0, 1.0));
        // Stratified: each class gives its exact share, rounded one way or the other.
        for (c, &k) in counts(&split.labels_u8).iter().enumerate() {
            let share = split.len() as f64 * all[c] as f64 / 1797.0;
            assert!(
                (k as f64 - share).abs() < 1.0,
                "class {c}: {k} for {share:.2}"
            );
        }
    }
    // MNIST's convention: the frame's border is background (-1) in most digits, and ink
    // (> 0) is a minority of the pixels.
    let px = d
        .train
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let ink = px.iter().filter(|&&v| v > 0.0).count() as f64 / px.len() as f64;
    eprintln!("UCI: {:.1}% of the pixels are ink", 100.0 * ink);
    assert!((0.08..0.3).contains(&ink), "{ink}");
    // UCI's column 0 is blank in 98.8% of the images: the box's first column, output
    // column 4, is background there, not ink (as it would be if the values were inverted).
    let blank = (0..d.train.len())
        .filter(|i| (4..24).all(|r| px[i * 784 + r * 28 + 4] == -1.0))
        .count();
    assert!(blank as f64 > 0.95 * d.train.len() as f64, "{blank}");
    let first = gan_data::read_uci_digits(&path, Verify::Canonical).unwrap();
    assert_eq!(first.len(), 1797);
    assert_eq!(first.labels[..3], [0, 1, 2]);
    if let Some(dir) = std::env::var_os("GAN_DATA_GRID_DIR") {
        let dir = PathBuf::from(dir);
        save_grid(&d.train.images, &dir.join("uci-train.png"));
        eprintln!("wrote {}", dir.join("uci-train.png").display());
    }
}

/// The first 64 images as an 8x8 grid PNG (2-pixel gaps), for a person to look at.
fn save_grid(images: &Tensor, path: &Path) {
    let (_, c, h, w) = images.dims4().unwrap();
    let px = images
        .narrow(0, 0, 64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (gap, side) = (2u32, 8u32);
    let cell = (w as u32 + gap, h as u32 + gap);
    let mut out = RgbImage::new(side * cell.0 + gap, side * cell.1 + gap);
    for i in 0..64usize {
        let (gx, gy) = (
            (i as u32 % side) * cell.0 + gap,
            (i as u32 / side) * cell.1 + gap,
        );
        for y in 0..h {
            for x in 0..w {
                let v = |k: usize| {
                    let k = k.min(c - 1);
                    ((px[((i * c + k) * h + y) * w + x] + 1.0) * 127.5).round() as u8
                };
                out.put_pixel(gx + x as u32, gy + y as u32, Rgb([v(0), v(1), v(2)]));
            }
        }
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    out.save(path).unwrap();
}

"""The papers' published numbers, in one place, as data: for comparison beside ours only, never as
ours. Each constant names its paper and table; a number read off a figure says so."""

#: Published test accuracies (mean, std over 5 folds, as fractions). For comparison only.
PAPER_000_TABLE_1 = {  # Schwöbel et al. 2020, Table 1 (Gaussian P-STN, affine)
    "cnn": {10: (0.5151, 0.0381), 30: (0.7002, 0.0441), 100: (0.8690, 0.0163), 1000: (0.9583, 0.0031),
            3000: (0.9746, 0.0016), 10000: (0.9796, 0.0001)},
    "stn": {10: (0.5172, 0.0527), 30: (0.6375, 0.0413), 100: (0.8110, 0.0131), 1000: (0.9348, 0.0123),
            3000: (0.9634, 0.0092), 10000: (0.9761, 0.0047)},
    "pstn": {10: (0.5572, 0.0634), 30: (0.7606, 0.0476), 100: (0.9191, 0.0077), 1000: (0.9747, 0.0035),
             3000: (0.9787, 0.0013), 10000: (0.9829, 0.0025)},
}
PAPER_000_TABLE_1.update({  # the same table's diffeomorphic (CPAB) rows
    "stn-cpab": {10: (0.5204, 0.0590), 30: (0.6945, 0.0315), 100: (0.8707, 0.0139), 1000: (0.9578, 0.0048),
                 3000: (0.9730, 0.0037), 10000: (0.9791, 0.0022)},
    "pstn-cpab": {10: (0.5728, 0.0858), 30: (0.7865, 0.0399), 100: (0.9344, 0.0013), 1000: (0.9729, 0.0040),
                  3000: (0.9795, 0.0015), 10000: (0.9816, 0.0016)},
})
PAPER_001_TABLE_2 = {  # Schwöbel et al. UAI 2022, Table 2 (Gamma P-STN)
    "cnn": {30: (0.7012, 0.0246), 100: (0.8729, 0.0058), 1000: (0.9580, 0.0033), 3000: (0.9748, 0.0021),
            10000: (0.9782, 0.0034)},
    "stn": {30: (0.6926, 0.0453), 100: (0.8216, 0.0230), 1000: (0.9205, 0.0058), 3000: (0.9471, 0.0022),
            10000: (0.9696, 0.0020)},
    "gamma_pstn": {30: (0.8100, 0.0392), 100: (0.9270, 0.0074), 1000: (0.9662, 0.0058), 3000: (0.9733, 0.0017),
                   10000: (0.9763, 0.0023)},
}

#: Paper 001 §5.3, MNIST100: ECE mean ± std over 5 folds (for comparison only).
PAPER_001_ECE = {"cnn": "0.0743 ± 0.0094", "stn": "0.1160 ± 0.0205",
                 "gamma_pstn at accuracy-optimal w": "0.0567 ± 0.0065 (w = 3e-4)",
                 "gamma_pstn at ECE-optimal w": "0.0271 ± 0.0088 (w = 1e-4)"}

#: Published test accuracies (mean, std over 5 repetitions). 000 Table 3: CNN, STN, Gaussian P-STN;
#: 001 Table 3: CNN, STN, Gamma P-STN. For comparison only.
PAPER_UCR = {
    "000": {"FaceAll": {"cnn": (0.7969, 0.0189), "stn": (0.8014, 0.0320), "pstn": (0.8186, 0.0194)},
            "PhalangesOutlinesCorrect": {"cnn": (0.7953, 0.0181), "stn": (0.8093, 0.0208), "pstn": (0.8245, 0.0166)}},
    "001": {"FaceAll": {"cnn": (0.8083, 0.0062), "stn": (0.8228, 0.0042), "gamma_pstn": (0.8431, 0.0075)},
            "PhalangesOutlinesCorrect": {"cnn": (0.7988, 0.0132), "stn": (0.8226, 0.0098),
                                         "gamma_pstn": (0.8166, 0.0059)}},
}

#: 001 §5.1.1 / §5.1.2: test accuracy and localization error ε (None: not reported) per model; cnn is
#: the frozen classifier alone on the transformed test set (placement: on upright images).
PAPER_001_LOCALIZATION = {
    "rotated_mnist": {"cnn": (0.412, None), "stn": (0.7613, 0.76), "gamma_pstn": (0.8298, 0.59)},
    "placed_fashion_mnist": {"cnn": (0.9063, None), "stn": (0.8441, None), "gamma_pstn": (0.8499, None)},
}
#: 001 §5.1: the frozen CNN's test accuracy on upright images.
PAPER_001_PRETRAINED = {"mnist": 0.994, "fashion_mnist": 0.9063}

#: 002 Table 1 (linear SVM test accuracy, %), for comparison only.
PAPER_002_TABLE1 = {
    ("pca", 8): 75.51, ("vae", 8): 87.99, ("tvae-affine", 8): 88.39, ("tvae-tps", 8): 88.65, ("dtvae-affine", 8): 93.87,
    ("pca", 20): 86.52, ("vae", 20): 86.45, ("tvae-affine", 20): 90.51, ("tvae-tps", 20): 94.48, ("dtvae-affine", 20): 94.17,
}

#: 003 Table 1: (train on, model, STN) → (accuracy base, accuracy augmented, test loss base, aug).
PAPER_003_TABLE1 = {
    ("base", "vae", False): (0.779, 0.6463, 0.2389, 0.4427), ("base", "vae", True): (0.7478, 0.6093, 0.1826, 0.2244),
    ("augmented", "vae", False): (0.7713, 0.7133, 0.2574, 0.2808),
    ("augmented", "vae", True): (0.757, 0.6384, 0.1889, 0.2045),
    ("base", "cat_vae", False): (0.8564, 0.7452, 7.107, 13.0395),
    ("base", "cat_vae", True): (0.8515, 0.7492, 5.2893, 6.5253),
    ("augmented", "cat_vae", False): (0.851, 0.7635, 7.6776, 8.6028),
    ("augmented", "cat_vae", True): (0.851, 0.7504, 5.4501, 5.9202),
}

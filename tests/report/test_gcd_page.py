"""The GCD page's pieces: the SVG flip-rate chart and the signed attribution images."""

import torch

from vcex.report.gcd import attribution_images, flip_curve_svg


def test_the_flip_curve_has_one_line_per_direction_through_its_points():
    svg = flip_curve_svg({"g0": ([1.0, 2.0, 3.0], [0.0, 0.5, 1.0]), "g20": ([1.0, 3.0], [0.1, 0.2])})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert ">g0<" in svg and ">g20<" in svg
    first = svg.split('<polyline points="')[1].split('"')[0].split()
    ys = [float(point.split(",")[1]) for point in first]
    assert ys[0] > ys[1] > ys[2]  # a rising flip rate goes up the page


def test_attribution_images_are_red_where_positive_and_blue_where_negative():
    maps = torch.zeros(1, 2, 2)
    maps[0, 0, 0], maps[0, 1, 1] = 1.0, -1.0
    (image,) = attribution_images(maps)
    assert image.shape == (3, 2, 2)
    assert image[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and image[:, 1, 1].tolist() == [0.0, 0.0, 1.0]
    assert image[:, 0, 1].tolist() == [1.0, 1.0, 1.0]

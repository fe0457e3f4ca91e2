"""DICOM reading: modality LUT, window / VOI LUT, MONOCHROME1, multi-frame refusal. About 1 s."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medrepro.core.errors import DataError
from medrepro.datamodules.transforms.image_reader import is_image_file, read_image


def write_dicom(path, pixels, photometric="MONOCHROME2", frames=1, **elements):
    """A minimal valid single- or multi-frame DICOM file of unsigned 16-bit pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.array([[0, 500, 1000, 1500, 2000]], dtype=np.uint16)


def test_without_window_min_max_maps_to_0_and_1(tmp_path):
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP + 100), channels=1)
    assert image.shape == (1, 5, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, :, 0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    rgb = read_image(tmp_path / "a.dcm", channels=3)
    assert rgb.shape == (1, 5, 3)


def test_monochrome1_is_inverted(tmp_path):
    image = read_image(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image[0, :, 0], [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-6)


def test_window_is_applied_after_the_rescale(tmp_path):
    # stored 0..2000 -> rescaled -1000..1000 (HU-like); window centre 0, width 1001:
    # DICOM's LINEAR function maps <= -500 to 0, > 500 to 1 and the centre to the middle
    path = write_dicom(tmp_path / "w.dcm", RAMP, RescaleSlope=1, RescaleIntercept=-1000,
                       WindowCenter=0, WindowWidth=1001)
    image = read_image(path)[0, :, 0]
    expected = np.clip(((np.array([-1000, -500, 0, 500, 1000]) - (0 - 0.5)) / 1000 + 0.5), 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-3)
    assert image[0] == 0.0 and image[-1] == 1.0 and abs(image[2] - 0.5) < 1e-3


def test_voi_lut_sequence_is_applied(tmp_path):
    lut = pydicom.Dataset()
    lut.LUTDescriptor = [4, 0, 12]  # 4 entries, first mapped value 0, 12-bit output
    lut.LUTData = [0, 4095, 4095, 4095]  # a step: 0 -> 0, 1 and above -> white
    lut["LUTData"].VR = "US"
    path = write_dicom(tmp_path / "lut.dcm", [[0, 1, 2, 3]], VOILUTSequence=[lut])
    np.testing.assert_allclose(read_image(path)[0, :, 0], [0, 1, 1, 1], atol=1e-6)


def test_multi_frame_is_refused_and_extension_is_accepted(tmp_path):
    path = write_dicom(tmp_path / "cine.DCM", np.zeros((3, 4, 4)), frames=3)
    assert is_image_file(path)
    with pytest.raises(DataError, match="multi-frame DICOM with 3 frames; export one image per file"):
        read_image(path)


def test_a_non_dicom_dcm_file_is_a_data_error(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="Cannot read image"):
        read_image(tmp_path / "x.dcm")

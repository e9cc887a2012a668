"""DICOM output of synthetic sets.

Two kinds of file:

* :func:`derived_dicom`: a user's DICOM mammogram with inserted lesions. Every original
  attribute is kept (patient, study, equipment, spacing, VOI, ...), so patient-level splits
  still work downstream; the pixels are replaced (uncompressed, same photometric
  interpretation, bit depth and representation) and the file becomes a new instance of a new
  series: new SOP Instance UID, one new Series Instance UID per synthetic set and source
  series, ImageType DERIVED\\SECONDARY, a DerivationDescription, a SourceImageSequence
  pointing at the original, and a synthetic-lesion marker in ImageComments,
  SeriesDescription and a private ``MAMMOSYNTH`` block.
* :func:`secondary_capture`: a generated image with no source DICOM (``generate --dicom``;
  ``insert --format dicom`` on PNG/TIFF input): a Secondary Capture marked SYNTHETIC, with the
  Type 2 attributes of its modules present, PixelSpacing where known, and one study and one
  series per synthetic set.

Both are checked with dciodvfy (Debian's dicom3tools) in tests/test_dicom_out.py.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.io import atomic_path

#: Private creator of the synthetic-lesion marker block (group 0x0099).
PRIVATE_CREATOR = "MAMMOSYNTH"
PRIVATE_GROUP = 0x0099
SYNTHETIC_MARKER = "SYNTHETIC LESION INSERTED - NOT A CLINICAL IMAGE"


@dataclass
class SetUIDs:
    """UIDs shared by the files of one synthetic set: one study for generated images, and one
    new series per source series for derived images."""

    study: str = ""
    series: str = ""
    derived_series: dict[str, str] = field(default_factory=dict)
    instances: int = 0

    def __post_init__(self) -> None:
        from pydicom.uid import generate_uid

        self.study = self.study or generate_uid()
        self.series = self.series or generate_uid()

    def series_for(self, source_series: str) -> str:
        from pydicom.uid import generate_uid

        if source_series not in self.derived_series:
            self.derived_series[source_series] = generate_uid()
        return self.derived_series[source_series]

    def next_instance(self) -> int:
        self.instances += 1
        return self.instances


def _now() -> tuple[str, str]:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _mark(ds: Any, note: str) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", SYNTHETIC_MARKER[:64])
    block.add_new(0x02, "LT", note)


def derived_dicom(ds: Any, pixels: np.ndarray, uids: SetUIDs, description: str, note: str = "") -> Any:
    """Turn the source dataset ``ds`` (modified in place and returned) into the derived image
    holding ``pixels`` ((H, W), the source's stored dtype and bit depth)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    src_class, src_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    bits_stored = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    ds.set_pixel_data(np.ascontiguousarray(pixels), photometric, bits_stored, generate_instance_uid=False)
    if "LossyImageCompression" not in ds and "LossyImageCompressionRatio" in ds:
        del ds.LossyImageCompressionRatio
    for tag, fn in (("SmallestImagePixelValue", np.min), ("LargestImagePixelValue", np.max)):
        if tag in ds:
            setattr(ds, tag, int(fn(pixels)))
    new_uid = generate_uid()
    ds.SOPInstanceUID = new_uid
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    ds.SeriesInstanceUID = uids.series_for(str(ds.get("SeriesInstanceUID", "")))
    image_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY"] + [str(v) for v in image_type[2:]]
    ds.DerivationDescription = (f"{description}. Synthetic lesion(s) inserted by mammosynth; pixels outside the "
                                "lesion and its margin ring are unchanged.")[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = src_class
    ref.ReferencedSOPInstanceUID = src_instance
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.SourceImageSequence = Sequence([ref])
    old_desc = str(ds.get("SeriesDescription", "") or "")
    ds.SeriesDescription = ("SYNTHETIC LESION " + old_desc).strip()[:64]
    comments = str(ds.get("ImageComments", "") or "")
    ds.ImageComments = (f"{SYNTHETIC_MARKER}. {note}" + (f" Original comments: {comments}" if comments else ""))[:10240]
    date, time = _now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    _mark(ds, note)
    return ds


def secondary_capture(pixels: np.ndarray, uids: SetUIDs, description: str = "", seed: int | None = None,
                      pixel_spacing_mm: float | None = None) -> Any:
    """A Secondary Capture dataset for a generated 8- or 16-bit greyscale image, marked SYNTHETIC."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = np.ascontiguousarray(pixels)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"secondary_capture needs uint8 or uint16 pixels, got {arr.dtype}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    date, time = _now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient (Type 2 attributes present, empty where unknown)
    ds.PatientName, ds.PatientID = "SYNTHETIC^MAMMOSYNTH", "SYNTHETIC"
    ds.PatientBirthDate, ds.PatientSex = "", ""
    # General Study: one study per synthetic set
    ds.StudyInstanceUID = uids.study
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "MAMMOSYNTH", ""
    # General Series
    ds.Modality = "MG"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = 1
    ds.Laterality = ""
    ds.SeriesDescription = "mammosynth synthetic image - not a patient image"
    # SC Equipment
    ds.ConversionType = "SYN"  # synthetic image (PS3.3 C.8.6.1)
    ds.Manufacturer = "mammosynth"
    # General Image
    ds.InstanceNumber = uids.next_instance()
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageType = ["DERIVED", "SECONDARY", "SYNTHETIC"]
    ds.DerivationDescription = f"synthetic image generated by mammosynth. {description}".strip()[:1024]
    ds.ImageComments = f"SYNTHETIC. {description}" + (f" seed={seed}" if seed is not None else "")
    ds.BurnedInAnnotation = "NO"
    if pixel_spacing_mm:
        ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}", f"{pixel_spacing_mm:.6g}"]
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 * arr.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    return ds


def save_dataset(path: str | Path, ds: Any) -> None:
    """Write a dataset as a DICOM Part 10 file, atomically."""
    with atomic_path(path, ".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)

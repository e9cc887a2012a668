"""Writers for tiny files in the real formats of each source (no downloads, no shared data).

DICOMs are written with pydicom exactly as scanners/TCIA store them (file meta, explicit
VR little endian, MONOCHROME1/2, 8/16-bit, optional rescale and window). CBIS-DDSM CSV rows
are copied verbatim from TCIA's published files (real metadata, CC BY 3.0) and the fixture
DICOMs are placed at the paths those rows name.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------
def synthetic_breast(h: int, w: int, laterality: str = "L", seed: int = 0) -> np.ndarray:
    """A float32 (h, w) image in [0, 1]: a half-ellipse of textured tissue at the chest-wall side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (xx / (0.75 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1.0
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 2.0)
    img = np.where(inside, 0.45 + 0.6 * texture, 0.03).astype(np.float32)
    img = np.clip(img, 0.0, 1.0)
    return img if laterality == "L" else np.ascontiguousarray(img[:, ::-1])


def disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    laterality: str | None = None,
    view: str | None = None,
    patient_id: str = "P0",
    pixel_spacing: float | None = 0.1,
    voi_lut: np.ndarray | None = None,
) -> Path:
    """Write an integer (H, W) array as a Digital Mammography DICOM file (explicit VR LE)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(pixels)
    bits_alloc = 8 if bits_stored <= 8 else 16
    arr = np.round(arr).astype(np.uint8 if bits_alloc == 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if voi_lut is not None:  # a VOI LUT Sequence item: descriptor (entries, first value, bits)
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUT Data, 16-bit entries
        ds.VOILUTSequence = [item]
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if pixel_spacing:
        ds.ImagerPixelSpacing = [f"{pixel_spacing:g}", f"{pixel_spacing:g}"]
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_image_dicom(path, image: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16, **kw) -> Path:
    """Store a [0, 1] float image as a DICOM with ``bits_stored`` bits (MONOCHROME1 inverted)."""
    full = 2**bits_stored - 1
    vals = image if photometric == "MONOCHROME2" else 1.0 - image
    return write_dicom(path, np.round(np.clip(vals, 0, 1) * full), photometric=photometric, bits_stored=bits_stored, **kw)


def write_mask_dicom(path, mask: np.ndarray) -> Path:
    """CBIS-DDSM-style ROI mask: 8-bit, values 0 and 255."""
    return write_dicom(path, mask.astype(np.uint8) * 255, bits_stored=8, pixel_spacing=None)


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a download that stopped half-way)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_png(path, arr: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_pgm(path, arr: np.ndarray) -> Path:
    """Binary 8-bit PGM (P5), the mini-MIAS format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr, dtype=np.uint8)
    path.write_bytes(b"P5\n%d %d\n255\n" % (a.shape[1], a.shape[0]) + a.tobytes())
    return path


# --------------------------------------------------------------------------------------
# INbreast OsiriX plist
# --------------------------------------------------------------------------------------
def write_osirix_xml(path, rois: list[tuple[str, list[tuple[float, float]]]]) -> Path:
    """An INbreast ROI file: plist with Images[0].ROIs[*].{Name, Point_px ("(x, y)")}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    roi_dicts = []
    for i, (name, pts) in enumerate(rois):
        roi_dicts.append({
            "Area": 0.0, "Center": "(0.000000, 0.000000, 0.000000)", "Dev": 0.0, "IndexInImage": i,
            "Max": 0.0, "Mean": 0.0, "Min": 0.0, "Name": name, "NumberOfPoints": len(pts),
            "Point_mm": [f"({x * 0.07:.6f}, {y * 0.07:.6f}, 0.000000)" for x, y in pts],
            "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in pts],
            "Total": 0.0, "Type": 15 if len(pts) > 1 else 19,
        })
    plist = {"Images": [{"ImageHeight": 0, "ImageIndex": 0, "ImageWidth": 0, "NumberOfROIs": len(rois), "ROIs": roi_dicts}]}
    with open(path, "wb") as fh:
        plistlib.dump(plist, fh)
    return path


def circle_points(cx: float, cy: float, r: float, n: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t]


# --------------------------------------------------------------------------------------
# CBIS-DDSM: real CSV rows (verbatim from TCIA's files) and DICOMs at their paths
# --------------------------------------------------------------------------------------
CBIS_MASS_HEADER = "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path\n"
CBIS_CALC_HEADER = "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path\n"
#: name -> verbatim row (ending in the quoted mask path with its embedded newline).
CBIS_MASS_TRAIN_ROWS: dict[str, str] = {
    "good": 'P_00001,3,LEFT,CC,1,mass,IRREGULAR-ARCHITECTURAL_DISTORTION,SPICULATED,4,MALIGNANT,4,Mass-Training_P_00001_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.422112722213189649807611434612228974994/1.3.6.1.4.1.9590.100.1.2.342386194811267636608694132590482924515/000000.dcm,Mass-Training_P_00001_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.108268213011361124203859148071588939106/1.3.6.1.4.1.9590.100.1.2.296736403313792599626368780122205399650/000000.dcm,"Mass-Training_P_00001_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.108268213011361124203859148071588939106/1.3.6.1.4.1.9590.100.1.2.296736403313792599626368780122205399650/000001.dcm\n"\n',
    "truncated": 'P_00001,3,LEFT,MLO,1,mass,IRREGULAR-ARCHITECTURAL_DISTORTION,SPICULATED,4,MALIGNANT,4,Mass-Training_P_00001_LEFT_MLO/1.3.6.1.4.1.9590.100.1.2.319478999311971442426185353560182990988/1.3.6.1.4.1.9590.100.1.2.359308329312397897125630708681441180834/000000.dcm,Mass-Training_P_00001_LEFT_MLO_1/1.3.6.1.4.1.9590.100.1.2.188473874511440575807446266233629582526/1.3.6.1.4.1.9590.100.1.2.227955274711225756835838775062793186053/000000.dcm,"Mass-Training_P_00001_LEFT_MLO_1/1.3.6.1.4.1.9590.100.1.2.188473874511440575807446266233629582526/1.3.6.1.4.1.9590.100.1.2.227955274711225756835838775062793186053/000001.dcm\n"\n',
    "non_mass": 'P_00004,3,LEFT,CC,1,mass,ARCHITECTURAL_DISTORTION,ILL_DEFINED,4,BENIGN,3,Mass-Training_P_00004_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.347107867812656628709864319310977895697/1.3.6.1.4.1.9590.100.1.2.89180046211022531834352631483669346540/000000.dcm,Mass-Training_P_00004_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.414182170112396175925115449620455230167/1.3.6.1.4.1.9590.100.1.2.429120414011832984817094399141838850375/000000.dcm,"Mass-Training_P_00004_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.414182170112396175925115449620455230167/1.3.6.1.4.1.9590.100.1.2.429120414011832984817094399141838850375/000001.dcm\n"\n',
    "mask_size": 'P_00004,3,RIGHT,MLO,1,mass,OVAL,CIRCUMSCRIBED,4,BENIGN,5,Mass-Training_P_00004_RIGHT_MLO/1.3.6.1.4.1.9590.100.1.2.174047308712169195014610267031196524486/1.3.6.1.4.1.9590.100.1.2.410524754913057908920631336070876889890/000000.dcm,Mass-Training_P_00004_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.341142631111685501338932932302380583774/1.3.6.1.4.1.9590.100.1.2.12857366312625701203276284233604184846/000000.dcm,"Mass-Training_P_00004_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.341142631111685501338932932302380583774/1.3.6.1.4.1.9590.100.1.2.12857366312625701203276284233604184846/000001.dcm\n"\n',
    "empty_mask": 'P_00009,3,RIGHT,CC,1,mass,OVAL,ILL_DEFINED,4,MALIGNANT,4,Mass-Training_P_00009_RIGHT_CC/1.3.6.1.4.1.9590.100.1.2.348094436212980762312744999743818171955/1.3.6.1.4.1.9590.100.1.2.392091931911637760938815694332198115839/000000.dcm,Mass-Training_P_00009_RIGHT_CC_1/1.3.6.1.4.1.9590.100.1.2.242248988911264591618859462853814566714/1.3.6.1.4.1.9590.100.1.2.38355348211600094806469224183939342192/000000.dcm,"Mass-Training_P_00009_RIGHT_CC_1/1.3.6.1.4.1.9590.100.1.2.242248988911264591618859462853814566714/1.3.6.1.4.1.9590.100.1.2.38355348211600094806469224183939342192/000001.dcm\n"\n',
    "missing": 'P_00009,3,RIGHT,MLO,1,mass,OVAL,ILL_DEFINED,4,MALIGNANT,4,Mass-Training_P_00009_RIGHT_MLO/1.3.6.1.4.1.9590.100.1.2.255880668112335952601613726063195485525/1.3.6.1.4.1.9590.100.1.2.18553022011298363903753970133853455201/000000.dcm,Mass-Training_P_00009_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.335609780010927131533324655753766075455/1.3.6.1.4.1.9590.100.1.2.401504763912518926442932683851439819951/000000.dcm,"Mass-Training_P_00009_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.335609780010927131533324655753766075455/1.3.6.1.4.1.9590.100.1.2.401504763912518926442932683851439819951/000001.dcm\n"\n',
    "clash": 'P_00059,1,LEFT,CC,1,mass,OVAL,OBSCURED,3,MALIGNANT,4,Mass-Training_P_00059_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.244333476513014374236524940141235965702/1.3.6.1.4.1.9590.100.1.2.62520602613602980418030688082379323379/000000.dcm,Mass-Training_P_00059_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.48879868112616314014628722363459317695/1.3.6.1.4.1.9590.100.1.2.11686230612923981409805359571305102767/000000.dcm,"Mass-Training_P_00059_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.401398924711581741339345765413987838707/1.3.6.1.4.1.9590.100.1.2.203970065112706924324370021454096282600/000000.dcm\n"\n',
    "other_uids": 'P_00059,1,LEFT,MLO,1,mass,OVAL,OBSCURED,3,MALIGNANT,4,Mass-Training_P_00059_LEFT_MLO/1.3.6.1.4.1.9590.100.1.2.319348319511040142417557303050939695280/1.3.6.1.4.1.9590.100.1.2.43941248811932060425959307772414033323/000000.dcm,Mass-Training_P_00059_LEFT_MLO_1/1.3.6.1.4.1.9590.100.1.2.176451340112398457403861042321269517686/1.3.6.1.4.1.9590.100.1.2.48416062411306564131997923171520794902/000000.dcm,"Mass-Training_P_00059_LEFT_MLO_1/1.3.6.1.4.1.9590.100.1.2.242921529611868736516328754073569063603/1.3.6.1.4.1.9590.100.1.2.213479805111756800235140829670343680695/000000.dcm\n"\n',
}
CBIS_MASS_TEST_ROW = 'P_00016,4,LEFT,CC,1,mass,IRREGULAR,SPICULATED,5,MALIGNANT,5,Mass-Test_P_00016_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.416403281812750683720028031170500130104/1.3.6.1.4.1.9590.100.1.2.245063149211255120613007755642780114172/000000.dcm,Mass-Test_P_00016_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.259596319110047779433501728143778409887/1.3.6.1.4.1.9590.100.1.2.30820586311062570442302321942433426184/000000.dcm,"Mass-Test_P_00016_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.259596319110047779433501728143778409887/1.3.6.1.4.1.9590.100.1.2.30820586311062570442302321942433426184/000001.dcm\n"\n'
CBIS_CALC_ROW = 'P_00005,3,RIGHT,CC,1,calcification,AMORPHOUS,CLUSTERED,3,MALIGNANT,3,Calc-Training_P_00005_RIGHT_CC/1.3.6.1.4.1.9590.100.1.2.408909860712120272633130274602115723157/1.3.6.1.4.1.9590.100.1.2.47414316010368386519740343172775938548/000000.dcm,"Calc-Training_P_00005_RIGHT_CC_1/1.3.6.1.4.1.9590.100.1.2.328778919012412769218080124214088709081/1.3.6.1.4.1.9590.100.1.2.393344010211719049419601138200355094682/000001.dcm\n",Calc-Training_P_00005_RIGHT_CC_1/1.3.6.1.4.1.9590.100.1.2.328778919012412769218080124214088709081/1.3.6.1.4.1.9590.100.1.2.393344010211719049419601138200355094682/000000.dcm\n'


def _paths(row: str) -> tuple[str, str, str]:
    import csv
    import io

    cells = next(csv.reader(io.StringIO(row)))
    return cells[11].strip(), cells[12].strip(), cells[13].strip()


def write_cbis_fixture(root: str | Path, h: int = 120, w: int = 96) -> dict[str, Path]:
    """A CBIS-DDSM tree under ``root`` for the rows above plus their CSVs. Returns CSV paths.

    good: MONOCHROME2 16-bit, crop 000000 + mask 000001 in one folder;
    clash: crop and mask both 000000.dcm in different folders, and *swapped* on disk;
    other_uids: files under different uid folders (found via the first folder);
    non_mass: ARCHITECTURAL_DISTORTION (lesion with shape None), MONOCHROME1 with rescale;
    truncated / mask_size / empty_mask / missing: the bad-input cases; test row: split test;
    calc row: skipped unless calcifications are asked for.
    """
    root = Path(root)
    lesion = disk(h, w, cx=0.35 * w, cy=0.5 * h, r=9)

    def full_and_roi(row: str, seed: int, photometric: str = "MONOCHROME2", mask=None, swap=False, rescale=None):
        full_rel, crop_rel, roi_rel = _paths(row)
        img = synthetic_breast(h, w, "L", seed)
        img[lesion] = np.clip(img[lesion] + 0.3, 0, 1)
        kw = {"rescale": rescale} if rescale else {}
        if rescale:  # stored = (value - intercept) / slope
            slope, icpt = rescale
            stored = (np.round(img * 4095) - icpt) / slope
            write_dicom(root / full_rel, stored, photometric=photometric, bits_stored=12, **kw)
        else:
            write_image_dicom(root / full_rel, img, photometric=photometric)
        y, x = np.nonzero(lesion)
        crop = img[y.min() : y.max() + 1, x.min() : x.max() + 1]
        m = lesion if mask is None else mask
        crop_at, mask_at = (roi_rel, crop_rel) if swap else (crop_rel, roi_rel)
        write_image_dicom(root / crop_at, crop)
        write_mask_dicom(root / mask_at, m)

    rows = CBIS_MASS_TRAIN_ROWS
    full_and_roi(rows["good"], 1)
    full_and_roi(rows["truncated"], 2)
    truncate(root / _paths(rows["truncated"])[0], 0.6)
    full_and_roi(rows["non_mass"], 3, photometric="MONOCHROME1")
    full_and_roi(rows["mask_size"], 4, mask=np.pad(lesion, ((0, 8), (0, 0))))
    full_and_roi(rows["empty_mask"], 5, mask=np.zeros_like(lesion))
    full_and_roi(rows["clash"], 6, swap=True)
    # other_uids: same first folders, other uid sub-folders and file names (e.g. NBIA's 1-1.dcm)
    full_rel, crop_rel, roi_rel = _paths(rows["other_uids"])
    img = synthetic_breast(h, w, "L", 7)
    write_image_dicom(root / full_rel.split("/")[0] / "07-20-2016-DDSM-12345" / "1.000000-full-456" / "1-1.dcm", img)
    roi_dir = root / roi_rel.split("/")[0] / "07-21-2016-DDSM-678" / "1.000000-ROI-910"
    write_image_dicom(roi_dir / "1-1.dcm", img[40:80, 20:50])
    write_mask_dicom(roi_dir / "1-2.dcm", lesion)
    full_and_roi(CBIS_MASS_TEST_ROW, 8, rescale=(2.0, -10.0))
    full_rel, crop_rel, roi_rel = _paths(CBIS_CALC_ROW)
    img = synthetic_breast(h, w, "R", 9)
    write_image_dicom(root / full_rel, img)
    write_image_dicom(root / crop_rel, img[50:70, 50:70])
    write_mask_dicom(root / roi_rel, disk(h, w, 0.7 * w, 0.5 * h, 6))
    csv_dir = root / "csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "mass_train": csv_dir / "mass_case_description_train_set.csv",
        "mass_test": csv_dir / "mass_case_description_test_set.csv",
        "calc_train": csv_dir / "calc_case_description_train_set.csv",
    }
    paths["mass_train"].write_text(CBIS_MASS_HEADER + "".join(rows.values()), newline="")
    paths["mass_test"].write_text(CBIS_MASS_HEADER + CBIS_MASS_TEST_ROW, newline="")
    paths["calc_train"].write_text(CBIS_CALC_HEADER + CBIS_CALC_ROW, newline="")
    return paths


# --------------------------------------------------------------------------------------
# mini-MIAS, VinDr, folder
# --------------------------------------------------------------------------------------
def write_mias_fixture(root: str | Path, size: int = 1024) -> Path:
    """mini-MIAS tree: 1024^2 P5 PGMs and an Info.txt with the real quirks (normal rows, a
    repeated REFNUM, a row without coordinates, a calcification). Returns Info.txt."""
    root = Path(root)
    rows = [
        "mdb001 G CIRC B 535 425 197",  # large benign circumscribed mass
        "mdb002 G CIRC B 522 280 69",
        "mdb003 D NORM ",
        "mdb005 F CIRC B 477 133 30",  # REFNUM repeats: two masses on one image
        "mdb005 F CIRC B 500 168 26",
        "mdb059 F CIRC B",  # no coordinates
        "mdb209 G CALC M 647 503 87",
        "mdb115 G ARCH M 461 532 117",
        "mdb184 F SPIC M 352 624 114",
    ]
    (root).mkdir(parents=True, exist_ok=True)
    info = root / "Info.txt"
    info.write_text("\n".join(rows) + "\n")
    for k, ref in enumerate(sorted({r.split()[0] for r in rows})):
        lat = "L" if int(ref[3:]) % 2 else "R"
        img = synthetic_breast(size, size, lat, seed=100 + k)
        write_pgm(root / f"{ref}.pgm", np.round(img * 255))
    return info


VINDR_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split\n"


def write_vindr_fixture(root: str | Path, h: int = 128, w: int = 100) -> Path:
    """VinDr tree: images/<study>/<image>.dicom (MONOCHROME1 with a window, as many vendors
    write) and finding_annotations.csv with a mass, a two-category row, a calcification and
    a No Finding image. Returns the CSV path."""
    root = Path(root)
    rows = [
        f's1,se1,img_mass,L,CC,{h},{w},BI-RADS 4,DENSITY C,"[\'Mass\']",BI-RADS 4,20.5,40.0,45.5,70.0,training',
        f's1,se1,img_mass,L,CC,{h},{w},BI-RADS 4,DENSITY C,"[\'Suspicious Calcification\']",BI-RADS 4,50.0,50.0,60.0,60.0,training',
        f's2,se2,img_two,R,MLO,{h},{w},BI-RADS 3,DENSITY B,"[\'Mass\', \'Suspicious Calcification\']",BI-RADS 3,60.0,30.0,80.0,55.0,test',
        f's2,se2,img_skin,R,CC,{h},{w},BI-RADS 2,DENSITY B,"[\'Skin Thickening\']",BI-RADS 2,1.0,1.0,9.0,9.0,test',
        f's3,se3,img_normal,L,MLO,{h},{w},BI-RADS 1,DENSITY A,"[\'No Finding\']",BI-RADS 1,,,,,training',
    ]
    csv_path = root / "finding_annotations.csv"
    root.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(VINDR_HEADER + "\n".join(rows) + "\n")
    for k, (study, image, lat) in enumerate([("s1", "img_mass", "L"), ("s2", "img_two", "R"), ("s2", "img_skin", "R"), ("s3", "img_normal", "L")]):
        img = synthetic_breast(h, w, lat, seed=200 + k)
        write_image_dicom(root / "images" / study / f"{image}.dicom", img, photometric="MONOCHROME1",
                          bits_stored=12, window=(2048, 4096), laterality=lat)
    return csv_path


def write_folder_fixture(root: str | Path, h: int = 96, w: int = 80) -> Path:
    """Folder-format tree: full image + mask (png), a crop-only lesion (tif), a DICOM normal,
    and rows for an unknown label and a missing file. Returns labels.csv."""
    from PIL import Image

    root = Path(root)
    img = synthetic_breast(h, w, "L", 300)
    lesion = disk(h, w, 0.35 * w, 0.5 * h, 8)
    write_png(root / "images" / "case1.png", np.round(img * 65535).astype(np.uint16))
    write_png(root / "masks" / "case1.png", (lesion * 255).astype(np.uint8))
    crop = img[30:60, 10:40]
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(crop * 255).astype(np.uint8)).save(root / "images" / "crop2.tif")
    cm = disk(30, 30, 15, 15, 11)
    Image.fromarray((cm * 255).astype(np.uint8)).save(root / "masks" / "crop2.tif")
    write_image_dicom(root / "images" / "normal3.dcm", synthetic_breast(h, w, "R", 301), laterality="R")
    write_png(root / "images" / "weird4.png", np.round(img * 255).astype(np.uint8))
    write_png(root / "masks" / "weird4.png", (lesion * 255).astype(np.uint8))
    labels = root / "labels.csv"
    labels.write_text(
        "file,patient_id,shape,margin,pathology,laterality,view,kind\n"
        "case1.png,pA,Oval,Ill-Defined,malignant,L,CC,lesion\n"
        "crop2,pB,irregular,spiculated,benign,,,lesion\n"
        "normal3.dcm,pC,,,,R,MLO,normal\n"
        "weird4.png,pD,starry,spiculated,benign,L,CC,lesion\n"
        "gone5.png,pE,oval,circumscribed,benign,L,CC,lesion\n"
    )
    return labels


def write_inbreast_fixture(root: str | Path, h: int = 128, w: int = 100) -> Path:
    """INbreast tree: AllDICOMs/<id>_<patient>_MG_<side>_<view>_ANON.dcm, AllXML/<id>.xml and
    INbreast.csv (``;``-separated). Image 1: a Mass polygon, a Spiculated Region, a
    Calcification point and an unknown ROI; image 2: no XML (a normal); image 3: only a
    Cluster of calcifications (a normal with other findings). Returns INbreast.csv."""
    root = Path(root)
    images = [("22678622", "61b13c59bcba149e", "L", "CC"), ("22678646", "61b13c59bcba149e", "R", "CC"),
              ("24055274", "d2a6e4e2ab3f4d0b", "L", "ML")]
    for k, (fid, patient, lat, view) in enumerate(images):
        img = synthetic_breast(h, w, lat, seed=400 + k)
        write_image_dicom(root / "AllDICOMs" / f"{fid}_{patient}_MG_{lat}_{view}_ANON.dcm", img, bits_stored=14)
    write_osirix_xml(root / "AllXML" / "22678622.xml", [
        ("Mass", circle_points(35, 60, 10)),
        ("Spiculated Region", circle_points(40, 95, 6, n=12)),
        ("Calcification", [(60.0, 40.0)]),
        ("Point 1", [(10.0, 10.0)]),
    ])
    write_osirix_xml(root / "AllXML" / "24055274.xml", [("Cluster", circle_points(30, 60, 8))])
    csv_path = root / "INbreast.csv"
    csv_path.write_text(
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
        "removed;removed;L;CC;201001;22678622;2;4c\n"
        "removed;removed;R;CC;201001;22678646;2;1\n"
        "removed;removed;L;MLO;201002;24055274;3;2\n"
    )
    return csv_path


# --------------------------------------------------------------------------------------
# hostile inputs: malformed values exactly as a broken exporter writes them
# --------------------------------------------------------------------------------------
def set_raw_element(path: str | Path, keyword: str, text: str) -> Path:
    """Rewrite one element of a DICOM file with ``text`` as its raw bytes, unvalidated, so a
    Decimal String can hold ``abc`` (pydicom refuses to *set* such a value; a broken
    exporter writes it anyway). Use ``\\`` to separate values of a multi-valued element."""
    import pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    path = Path(path)
    ds = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    value = text.encode("latin-1")
    value += b" " * (len(value) % 2)  # DICOM values have even length
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    ds.save_as(path)
    return path


def write_plist(path: str | Path, obj) -> Path:
    """Any plist object (dict, list, ...) as an XML plist: malformed OsiriX ROI files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        plistlib.dump(obj, fh)
    return path


def write_float_tiff(path: str | Path, arr: np.ndarray) -> Path:
    """A 32-bit float TIFF (what some pipelines export); may hold NaN."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.float32), mode="F").save(path)
    return path


def write_mias_like_fixture(root: str | Path, n_per_margin: dict[str, int], size: int = 128, seed: int = 0,
                            n_normals: int = 0) -> Path:
    """A mini-MIAS tree with many small masses, one image (and so one film) each: ``size``
    square P5 PGMs and an Info.txt whose CLASS column cycles through ``n_per_margin``
    (``{"CIRC": 12, "SPIC": 15, "MISC": 11}``), severities alternating B/M. Patients pair
    films as in mini-MIAS (mdb001 + mdb002). Returns Info.txt."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = [c for c, n in n_per_margin.items() for _ in range(n)] + ["NORM"] * n_normals
    rng.shuffle(classes)
    rows = []
    for k, cls in enumerate(classes, start=1):
        ref = f"mdb{k:03d}"
        lat = "L" if k % 2 else "R"
        img = synthetic_breast(size, size, lat, seed=seed * 1000 + k)
        if cls == "NORM":
            rows.append(f"{ref} F NORM ")
        else:
            cx = int(0.3 * size) if lat == "L" else int(0.7 * size)
            cy = int(rng.integers(size // 3, 2 * size // 3))
            r = int(rng.integers(4, size // 10))
            img[disk(size, size, cx, size - 1 - cy, r)] += 0.25
            rows.append(f"{ref} G {cls} {'BM'[k % 2]} {cx} {cy} {r}")
        write_pgm(root / f"{ref}.pgm", np.round(np.clip(img, 0, 1) * 255))
    info = root / "Info.txt"
    info.write_text("\n".join(rows) + "\n")
    return info

#!/usr/bin/env python
"""Figures of the Slicer module for docs/slicer.md, made without the Slicer desktop application.

    python -m research.experiments.slicer_figures [--model PATH]     (needs PySide6 and slicer-core)

slicer-module-panel.png
    The module panel as Qt draws Resources/UI/MECCASegment.ui (PySide6, offscreen). The Slicer/CTK
    widgets (node selectors, collapsible sections, slider, path fields) are unknown to plain Qt, so
    they are drawn by the nearest plain Qt widget; the values shown are those of the session of the
    second figure. It is a rendering of the .ui file, not a screenshot of Slicer.
slicer-confidence-overlay.png
    An axial slice of the bundled sample (hippocampus_001, shipped with the module) as Slicer's own slice pipeline (vtkMRMLSliceLogic of the
    slicer-core wheel) blends it with the confidence volume of a MECCA session run through the
    module's Logic (3 rounds of simulated clicks, ROI = object box + 8 voxels). The segment outline,
    the clicks and the numbered advice regions are drawn on top with matplotlib, because drawing
    segmentations and markups needs Slicer's render windows.
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "docs" / "images"

UI_FILE = ROOT / "MECCASegment" / "Resources" / "UI" / "MECCASegment.ui"
CASE = "hippocampus_001 (bundled sample)"


def run_session(model: str | None):
    """A MECCA session on the real case through the module's Logic; returns what the figures show."""
    sys.path[:0] = [str(ROOT / "MECCASegment"), str(ROOT / "Testing")]
    import slicer.util
    from headless_slicer import HeadlessSlicer
    from mecca.geometry import ijk_from_kji, label_box
    from mecca.io import read_volume
    from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
    from mecca.users import SimulatedUser
    from MECCASegmentLib.mrml import ijkToWorld

    from MECCASegment import MECCASegmentLogic

    app = HeadlessSlicer().install_slicer_globals()
    label = read_volume(resource_path(*SAMPLE_LABEL)).array
    volumeNode = slicer.util.loadVolume(str(resource_path(*SAMPLE_IMAGE)))
    lo, hi = label_box(label)
    corners = np.array([ijkToWorld(volumeNode, lo), ijkToWorld(volumeNode, np.subtract(hi, 1))])
    roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roiNode.SetCenter(*corners.mean(0))
    roiNode.SetSize(*np.abs(corners[1] - corners[0]))
    logic = MECCASegmentLogic(modelPath=model, device="cpu")
    session = logic.startSession(volumeNode, None, roiNode=roiNode)
    user, clicks, stats = SimulatedUser(label > 0, seed=0), [], None
    for round_index in range(3):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentationNode, session.segmentId, volumeNode) > 0
        for click in user.clicks(mask, 3, round_index):
            session.addClick(ijkToWorld(volumeNode, ijk_from_kji(click.position)), click.positive)
            clicks.append(click)
        stats = session.refine()
    session.setConfidenceVisible(True, 0.45)
    segment = slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentationNode, session.segmentId, volumeNode) > 0
    return app, logic, session, volumeNode, segment, label > 0, clicks, stats


def slice_figure(app, session, volumeNode, segment, label, clicks, path: Path) -> None:
    """Blend background + confidence with Slicer's slice logic, then draw outline, clicks, advice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import vtk.util.numpy_support
    from matplotlib.lines import Line2D
    from mecca import colours
    from mecca.colours import hex_code
    from mecca.geometry import ijk_from_kji
    from MECCASegmentLib.mrml import ijkToWorld, worldToIjk

    regions = session.adviceRegions
    k = int(np.argmax(segment.sum(axis=(1, 2)))) if segment.any() else segment.shape[0] // 2
    red = app.slice_logics["Red"]
    red.ResizeSliceNode(400, 400)
    red.FitSliceToBackground()
    red.SetSliceOffset(float(volumeNode.GetOrigin()[2] + k * volumeNode.GetSpacing()[2]))
    producer = red.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    rgba = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)

    xyToRas = np.array([[red.GetSliceNode().GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    ys, xs = np.mgrid[0:height, 0:width]
    ras = xyToRas @ np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size), np.ones(xs.size)])
    ijk = np.rint([worldToIjk(volumeNode, p) for p in ras[:3].T]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < segment.shape[::-1]), axis=1)

    def resample(mask):
        out = np.zeros(xs.size, bool)
        out[inside] = mask[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
        return out.reshape(height, width)

    def to_xy(ras_point):
        xy = np.linalg.inv(xyToRas) @ [*ras_point, 1.0]
        return xy[0], xy[1]

    fig, ax = plt.subplots(figsize=(5.2, 5.6), dpi=110)
    ax.imshow(rgba[..., :3], origin="lower")
    ax.contour(resample(label), levels=[0.5], colors=hex_code(colours.REFERENCE), linewidths=1.0, linestyles="dashed")
    ax.contour(resample(segment), levels=[0.5], colors=hex_code(colours.SEGMENT), linewidths=1.6)
    advice = session._engine.advice_map()  # what the module's advice segments hold
    for region in regions:
        ax.contour(resample(advice == region.rank), levels=[0.5], colors=hex_code(colours.ADVICE), linewidths=1.0)
    for click in clicks:
        if abs(click.position[0] - k) <= 1:
            x, y = to_xy(ijkToWorld(volumeNode, ijk_from_kji(click.position)))
            ax.plot(x, y, "P" if click.positive else "X", ms=8, mec="black",
                    mfc=hex_code(colours.POSITIVE_CLICK if click.positive else colours.NEGATIVE_CLICK))
    for region in regions:
        if abs(region.centreIjk[2] - k) <= 2:
            x, y = to_xy(region.centreRas)
            ax.text(x, y, str(region.rank), color="black", fontsize=9, fontweight="bold", ha="center", va="center",
                    bbox={"boxstyle": "circle,pad=0.2", "fc": hex_code(colours.ADVICE), "ec": "black"})
    for text, (x, y) in {"R": (0.02, 0.5), "L": (0.98, 0.5), "A": (0.5, 0.98), "P": (0.5, 0.02)}.items():
        ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=8, weight="bold", ha="center",
                va="center")  # Slicer's axial view: the patient's right on the screen's left
    ax.set_axis_off()
    ax.set_title(f"{CASE}, axial slice {k}, after 3 rounds", fontsize=9)
    handles = [Line2D([], [], color=hex_code(colours.SEGMENT), lw=1.6, label="MECCA segment"),
               Line2D([], [], color=hex_code(colours.REFERENCE), lw=1.0, ls="--", label="expert label"),
               Line2D([], [], ls="", marker="P", ms=8, mec="black", mfc=hex_code(colours.POSITIVE_CLICK), label="+ click"),
               Line2D([], [], ls="", marker="X", ms=8, mec="black", mfc=hex_code(colours.NEGATIVE_CLICK), label="- click"),
               Line2D([], [], color=hex_code(colours.ADVICE), lw=1.0, marker="o", ms=9, mfc=hex_code(colours.ADVICE),
                      mec="black", label="click-here-next region (rank)")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, fontsize=7,
              frameon=False)
    table = session.confidenceVolumeNode.GetDisplayNode().GetColorNode().GetLookupTable()  # the overlay's own colours
    overlay = matplotlib.colors.ListedColormap([table.GetTableValue(i)[:3] for i in range(table.GetNumberOfTableValues())])
    scale = plt.cm.ScalarMappable(cmap=overlay, norm=matplotlib.colors.Normalize(0, colours.CONFIDENT))
    bar = fig.colorbar(scale, ax=ax, orientation="vertical", fraction=0.04, pad=0.02)
    bar.set_label(f"confidence in the change (overlay: purple = doubtful; clear at {colours.CONFIDENT} and above)",
                  fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def panel_figure(logic, session, volumeNode, stats, path: Path) -> None:
    """The .ui drawn by Qt with stand-ins for the Slicer/CTK widgets, filled with the session's values."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from mecca import colours
    from mecca.defaults import START_ESTIMATES
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLineEdit, QPushButton, QSlider, QTableWidgetItem, QWidget

    standIns = {"ctkCollapsibleButton": QGroupBox, "qMRMLNodeComboBox": QComboBox,
                "qMRMLSegmentSelectorWidget": QComboBox, "ctkSliderWidget": QSlider, "ctkPathLineEdit": QLineEdit,
                "ctkDirectoryButton": QPushButton, "qMRMLWidget": QWidget}

    class Loader(QUiLoader):
        def createWidget(self, className, parent=None, name=""):
            if className in standIns:
                widget = standIns[className](parent)
                widget.setObjectName(name)
                return widget
            return super().createWidget(className, parent, name)

    app = QApplication.instance() or QApplication([])
    panel = Loader().load(str(UI_FILE))
    titles = {w.get("name"): w.find("property[@name='text']/string").text
              for w in ET.parse(UI_FILE).iter("widget") if w.get("class") == "ctkCollapsibleButton"}
    for name, title in titles.items():
        panel.findChild(QGroupBox, name).setTitle(title)
    panel.findChild(QGroupBox, "fineTuneCollapsibleButton").setTitle(titles["fineTuneCollapsibleButton"] + " (collapsed)")
    for widget in panel.findChild(QGroupBox, "fineTuneCollapsibleButton").findChildren(QWidget):
        widget.hide()
    panel.findChild(QComboBox, "inputVolumeSelector").addItem(volumeNode.GetName())
    panel.findChild(QComboBox, "segmentSelector").addItem(f"{session.segmentationNode.GetName()} / MECCA")
    panel.findChild(QComboBox, "roiSelector").addItem("ROI")
    panel.findChild(QComboBox, "deviceComboBox").addItems(["auto", "cpu", "cuda"])
    panel.findChild(QComboBox, "startEstimateComboBox").addItems(list(START_ESTIMATES))  # as the parameter node fills it
    panel.findChild(QLineEdit, "modelPathLineEdit").setPlaceholderText("(bundled model)")
    slider = panel.findChild(QSlider, "confidenceOpacitySlider")
    slider.setOrientation(Qt.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(45)
    for name in ("autoRefineCheckBox", "confidenceCheckBox", "adviceCheckBox"):
        panel.findChild(QWidget, name).setChecked(True)
    panel.findChild(QWidget, "positiveClickButton").setChecked(True)
    panel.findChild(QWidget, "startButton").setEnabled(False)
    panel.findChild(QWidget, "modelInfoLabel").setText(logic.modelDescription)
    panel.findChild(QWidget, "statusLabel").setText(
        f"Round {stats['round']}: {stats['seconds']:.2f} s, {stats['changedVoxels']} voxels changed, "
        f"segment {stats['segmentVoxels']} voxels.")
    table = panel.findChild(QWidget, "adviceTable")
    regions = session.adviceRegions
    table.setRowCount(len(regions))
    for row, region in enumerate(regions):
        for column, text in enumerate(region.tableRow):
            table.setItem(row, column, QTableWidgetItem(text))
        table.item(row, 0).setForeground(QColor.fromRgbF(*colours.ADVICE))  # as the widget's showRound
        table.item(row, 0).setBackground(QColor("black"))
    table.resizeColumnsToContents()
    panel.resize(400, 760)
    panel.grab().save(str(path))
    del app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    args = parser.parse_args(argv)
    app, logic, session, volumeNode, segment, label, clicks, stats = run_session(args.model)
    slice_figure(app, session, volumeNode, segment, label, clicks, HERE / "slicer-confidence-overlay.png")
    panel_figure(logic, session, volumeNode, stats, HERE / "slicer-module-panel.png")
    print(f"wrote {HERE / 'slicer-confidence-overlay.png'} and {HERE / 'slicer-module-panel.png'} "
          f"(model {logic.modelFile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

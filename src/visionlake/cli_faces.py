"""`visionlake faces`: enrol people, see who is in a frame, group and name unknown faces, find similar
faces, forget old unknown faces. A thin layer over `visionlake.faces.library`, imported inside each
command so that CLI start-up never loads dlib, NumPy or SQLAlchemy."""

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import FormatOpt, command_group, count_option, existing_lake, number_option, time_option
from .output import Format, err_console, esc, record_out, rows_out

faces_app = command_group(
    "Face identity: enrol people from photos; face-id workers then label faces with their names.\n\n"
    "Embeddings are personal data: `faces remove` deletes a person's, `faces forget` old unknown ones "
    "(what is stored: docs/catalog.md)."
)

ThresholdOpt = Annotated[
    float,
    number_option("Faces closer than this are the same person (measured: 0.5)", "--threshold", max=2.0),
]


def register(app: typer.Typer) -> None:
    if any(g.name == "faces" for g in app.registered_groups):
        return
    app.add_typer(faces_app, name="faces")


@faces_app.command("enroll")
def enroll(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The person's name (the label their faces get)")],
    photos: Annotated[list[Path], typer.Argument(help="Photos showing exactly one face each (JPEG or PNG)")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Enrol a person from photos; each must show exactly one face. All or nothing: one bad photo and
    nothing is stored. Enrolling a known name adds photos to it."""
    from .faces.library import enrol

    n = enrol(ctx.find_root().obj.lake, name, [str(p) for p in photos])
    record_out({"name": name, "photos_added": len(photos), "photos": n}, fmt, title="Enrolled")


@faces_app.command("list")
def list_(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """Enrolled people: photos, and how often face-id workers saw them."""
    from .faces.library import identities

    cols = ["name", "photos", "enrolled_at", "faces_seen", "first_seen", "last_seen"]
    rows_out(cols, identities(existing_lake(ctx)), fmt, title="Identities")


@faces_app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="An enrolled name")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Delete a person: the identity, every embedding of them (photos and faces seen), and their name
    on stored boxes, which become "unknown"."""
    from .faces.library import remove as remove_identity

    done = remove_identity(existing_lake(ctx), name)
    record_out({"name": name, **done}, fmt, title="Removed")


@faces_app.command("who")
def who(
    ctx: typer.Context,
    frame_id: Annotated[str, typer.Argument(help="A frame id, or its first characters")],
    threshold: ThresholdOpt = 0.5,
    fmt: FormatOpt = Format.table,
) -> None:
    """Who is in a stored frame: each face with the nearest enrolled person (or unknown) and the distance."""
    from .faces.library import who as who_is

    fid, found = who_is(existing_lake(ctx), frame_id, threshold)
    rows = [(i, *f.box, f.name, f.distance, f.nearest) for i, f in enumerate(found)]
    rows_out(
        ["face", "x1", "y1", "x2", "y2", "name", "distance", "nearest"], rows, fmt, title=f"Faces in {fid}"
    )


@faces_app.command("cluster")
def cluster(
    ctx: typer.Context,
    since: Annotated[
        datetime | None, time_option("Faces seen at or after (ISO 8601 or an age like 1d)")
    ] = None,
    until: Annotated[datetime | None, time_option("Faces seen before")] = None,
    threshold: ThresholdOpt = 0.5,
    fmt: FormatOpt = Format.table,
) -> None:
    """Group the unknown faces into people; name a group with `faces name CLUSTER NAME`."""
    from .faces.library import cluster as group

    found = group(existing_lake(ctx), since, until, threshold)
    rows = [
        (c.number, c.faces, c.first_seen, c.last_seen, ",".join(c.cameras), c.example_frame) for c in found
    ]
    rows_out(
        ["cluster", "faces", "first_seen", "last_seen", "cameras", "example_frame"],
        rows,
        fmt,
        title="Unknown people",
    )


@faces_app.command("name")
def name_cluster(
    ctx: typer.Context,
    cluster: Annotated[int, typer.Argument(help="A cluster number from `faces cluster`", min=0)],
    name: Annotated[str, typer.Argument(help="Who they are")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Name a cluster of unknown faces: its faces are enrolled as that person and relabelled."""
    from .faces.library import name_cluster as name_it

    done = name_it(existing_lake(ctx), cluster, name)
    record_out({"cluster": cluster, "name": name, **done}, fmt, title="Named")


@faces_app.command("similar")
def similar(
    ctx: typer.Context,
    frame_id: Annotated[str, typer.Argument(help="A frame a face-id worker processed")],
    face: Annotated[
        int, count_option("Which face of the frame (0: the leftmost)", "--face", min=0, max=10_000)
    ] = 0,
    limit: Annotated[int, count_option("How many faces", max=10_000)] = 10,
    fmt: FormatOpt = Format.table,
) -> None:
    """The stored faces most like one face of a frame, nearest first."""
    from .faces.library import similar as nearest

    found = nearest(existing_lake(ctx), frame_id, face, limit)
    rows = [
        (d, f.identity or "unknown", f.frame_id, f.captured_at, *(f.box or (None,) * 4)) for f, d in found
    ]
    rows_out(
        ["distance", "name", "frame_id", "captured_at", "x1", "y1", "x2", "y2"],
        rows,
        fmt,
        title="Similar faces",
    )


@faces_app.command("forget")
def forget(
    ctx: typer.Context,
    forget_after: Annotated[
        datetime,
        time_option("Delete unknown faces seen before this (an age like 30d, or a time)", "--forget-after"),
    ],
) -> None:
    """Retention: delete the embeddings of unknown faces older than --forget-after (run it daily).
    Enrolled people and named faces are kept; `faces remove` deletes those."""
    from .faces.library import forget as forget_faces

    n = forget_faces(existing_lake(ctx), forget_after)
    err_console.print(f"forgot {n} unknown face{'s' if n != 1 else ''} seen before {esc(forget_after)}")

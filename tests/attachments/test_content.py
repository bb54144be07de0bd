"""Names, keys, Content-Disposition and the content rules, without I/O."""

import pytest

from chatsvc.attachments import content
from tests.attachments.conftest import PDF, PNG


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("photo.png", "photo.png"),
        ("Café photo (1).png", "Cafe_photo_1_.png"),
        ("../../etc/passwd", "etc_passwd"),
        ("..", "file"),
        ("你好.txt", "txt"),
        ("a/b\\c.pdf", "a_b_c.pdf"),
        ("x" * 300 + ".pdf", "x" * 96 + ".pdf"),
    ],
)
def test_key_names_are_safe_segments(name, segment):
    assert content.key_name(name) == segment
    key = content.object_key(tenant_id="T", connection_id="C", attachment_id="A", name=name)
    assert key == f"tenants/T/rooms/C/A/{segment}"
    assert ".." not in key.split("/")


def test_content_disposition_follows_rfc_6266():
    assert content.content_disposition("a.pdf") == (
        "attachment; filename=\"a.pdf\"; filename*=UTF-8''a.pdf"
    )
    assert content.content_disposition("naïve résumé.pdf") == (
        'attachment; filename="naive resume.pdf"; '
        "filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf"
    )
    header = content.content_disposition('x";\r\nSet-Cookie: a=b\\.txt')
    assert "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="x_;__Set-Cookie: a=b_.txt"')
    assert content.content_disposition("你好") == (
        "attachment; filename=\"file\"; filename*=UTF-8''%E4%BD%A0%E5%A5%BD"
    )


def test_types_are_normalized():
    assert content.normalize_type(" Image/JPG ") == "image/jpeg"
    assert content.normalize_type("text/plain; charset=utf-8") == "text/plain"
    assert content.is_content_type("application/vnd.ms-excel")
    assert not content.is_content_type("png") and not content.is_content_type("a/b c")


def test_detection_trusts_bytes_not_names():
    assert content.detect(PNG, declared="image/png", complete=True) == "image/png"
    assert content.detect(PNG, declared="application/pdf", complete=True) == "image/png"
    assert content.detect(PDF, declared="application/pdf", complete=True) == "application/pdf"
    assert content.detect(b"just words", declared="image/png", complete=True) is None
    # Text: valid UTF-8 without NUL, whatever a weak signature says ("BM" is BMP's).
    assert content.detect(b"BM is my initials", declared="text/plain", complete=True) == (
        "text/plain"
    )
    assert content.detect(PNG, declared="text/plain", complete=True) == "image/png"
    assert content.detect(b"a\x00b", declared="text/plain", complete=True) != "text/plain"
    cut = "é".encode()[:1]
    assert content.is_text(b"abc" + cut, complete=False)
    assert not content.is_text(b"abc" + cut, complete=True)
    assert not content.is_text(b"\xff\xfeabc", complete=False)


@pytest.mark.parametrize("name", ["ok.png", "x" * 255, "résumé 2024.pdf"])
def test_good_names(name):
    assert content.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 256, "a\tb", "a\x7fb", "\ud800", "   ", None])
def test_bad_names(name):
    with pytest.raises(content.BadName):
        content.check_name(name)

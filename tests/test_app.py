"""The Gradio app (scripts/app.py) in a real browser: headless Chromium driven by Selenium.

The app runs in a subprocess on a free local port with the trained checkpoint (vlmixer-small, or $VLMIXER_APP_MODEL),
or, where `make demo` has not run (CI), with a checkpoint that scripts/pretrain.py writes after two steps on a
50-image gallery: then the page is checked, but not that the trouser wins;
the browser clicks a Fashion-MNIST test image among the examples, presses Classify, and reads the top label from the
page; then it types a sentence and checks that the cross-modal CutMix picture is redrawn. A screenshot of the page is
checked to be a non-blank PNG (written to $VLMIXER_APP_SCREENSHOT too when set, e.g. docs/app_screenshot.png).
Both check that nothing left the machine: the page's requests (Chrome's network log) and the server's connections
and name lookups (a Python audit hook in the app's process), with the app's own offline settings.

Needs: gradio and selenium (pip), Debian's chromium and chromium-driver (apt), Fashion-MNIST (apt
dataset-fashion-mnist) and the trained checkpoint (`make demo`); skipped, saying which is missing, otherwise.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from .test_pipelines import tiny_processor  # noqa: F401  (the fixture: MiniLM's tokenizer, 32 px images, COCO concepts)

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "scripts" / "app.py"
MODEL = Path(os.environ.get("VLMIXER_APP_MODEL", REPO_ROOT / "vlmixer-small"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
STARTUP_SECONDS = 90  # model loading on a busy 2-core machine
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def missing_for_browser_test() -> str | None:
    """Why the browser test cannot run here, or None."""
    for module, how in (("gradio", "pip install gradio (the `app` extra)"), ("selenium", "pip install selenium")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed: {how}"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium or chromedriver is not installed: apt-get install chromium chromium-driver"
    if not FASHION_MNIST.exists():
        return f"{FASHION_MNIST} is missing: apt-get install dataset-fashion-mnist (make data)"
    return None


TRAINED = (MODEL / "config.json").exists()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """The trained checkpoint, or else a barely trained one made by the real scripts (the page, not the accuracy)."""
    if TRAINED:
        return MODEL
    from vlmixer.scripts import build_gallery
    from vlmixer.scripts import make_corpus
    from vlmixer.scripts import pretrain

    work = tmp_path_factory.mktemp("app-model")
    build_gallery.main(["--fashion_mnist", str(FASHION_MNIST.parent), "--per_class", "5", "--image_size", "64",
                        "--thumbnail_size", "28", "--output_dir", str(work / "gallery")])  # fmt: skip
    make_corpus.main(["--output_file", str(work / "corpus.txt"), "--sentences", "200"])
    pretrain.main(["--text_corpus", str(work / "corpus.txt"), "--gallery", str(work / "gallery"), "--output_dir",
                   str(work / "run"), "--max_steps", "2", "--batch_size", "4", "--image_size", "64"])  # fmt: skip
    return work / "run" / "final"


needs_browser = pytest.mark.skipif(missing_for_browser_test() is not None, reason=str(missing_for_browser_test()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory, minilm_path) -> Path:
    """A random 1-layer CLIP saved with a CLIPProcessor made of MiniLM's tokenizer and a 32 px image processor: the
    stock zero-shot-image-classification pipeline's own kind of model, built offline."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    text = dict(tower, vocab_size=tokenizer.vocab_size, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(CLIPConfig(text_config=text, vision_config=dict(tower, image_size=32, patch_size=16), projection_dim=8)
              ).save_pretrained(folder)  # fmt: skip
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def clip_scores(folder: Path) -> list[dict]:
    """transformers' own zero-shot pipeline on the CLIP folder: it must be the stock class and give scores."""
    from PIL import Image
    from transformers import pipeline
    from transformers.pipelines.zero_shot_image_classification import ZeroShotImageClassificationPipeline

    classifier = pipeline("zero-shot-image-classification", model=str(folder), device=-1)
    assert type(classifier) is ZeroShotImageClassificationPipeline
    scores = classifier(Image.new("RGB", (40, 30), (200, 30, 30)), candidate_labels=["a dog", "a red square"])
    assert sorted(s["label"] for s in scores) == ["a dog", "a red square"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)
    return scores


def test_stock_clip_pipeline_still_works_beside_the_apps_classifier(tiny_clip_folder, tiny_processor):
    """The app's classifier is VLMixer's for its own model only: CLIP's pipeline gives the same scores before and after."""
    from vlmixer.modeling_vlmixer import VLMixerForPreTraining
    from vlmixer.modeling_vlmixer.pipeline_vlmixer import VLMixerZeroShotImageClassificationPipeline
    from vlmixer.scripts import app

    from .test_pipelines import backbone_config, image_array

    before = clip_scores(tiny_clip_folder)
    classifier = app.zero_shot_classifier(VLMixerForPreTraining(backbone_config()).eval(), tiny_processor)
    assert isinstance(classifier, VLMixerZeroShotImageClassificationPipeline)
    ours = classifier(image_array(0), candidate_labels=["dog", "person"])
    assert sum(s["score"] for s in ours) == pytest.approx(1.0, abs=1e-5)
    after = clip_scores(tiny_clip_folder)
    assert [s["label"] for s in after] == [s["label"] for s in before]
    assert [s["score"] for s in after] == pytest.approx([s["score"] for s in before], abs=1e-6)


def test_help_explains_the_flags():
    result = subprocess.run(
        [sys.executable, str(APP), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--model", "--trust_remote_code", "--port", "--share", "Hub id"):
        assert flag in result.stdout


# Runs the app with an audit hook that reports every connection, or name lookup, to a host outside the machine.
GUARDED_RUN = """
import runpy, sys
LOCAL = ("127.", "localhost", "::1", "0.0.0.0")
def local(host):
    return host is None or (isinstance(host, bytes) and host.decode().startswith(LOCAL)) or str(host).startswith(LOCAL)
def hook(event, args):
    if event == "socket.getaddrinfo" and not local(args[0]):
        print(f"OUTBOUND lookup of {args[0]}", file=sys.stderr, flush=True)
    elif event == "socket.connect" and isinstance(args[1], tuple) and not local(args[1][0]):
        print(f"OUTBOUND connection to {args[1]}", file=sys.stderr, flush=True)
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory, model_folder):
    """(URL, log file) of the app served by a subprocess on a free port, with the offline settings of its own."""
    folder = tmp_path_factory.mktemp("app")
    port = free_port()
    unset = ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "GRADIO_SERVER_NAME")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env.update(GRADIO_TEMP_DIR=str(folder / "gradio"), PYTHONUNBUFFERED="1")
    log_path = folder / "app.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", GUARDED_RUN, str(APP), "--model", str(model_folder), "--port", str(port),
             "--examples_dir", str(folder / "examples")],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within {STARTUP_SECONDS} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_offline(driver, log_path: Path) -> None:
    """Neither the page nor the server reached outside the machine."""
    assert requested_hosts(driver) <= set(LOCAL_HOSTS), "the page fetched something from outside the machine"
    outbound = [line for line in log_path.read_text().splitlines() if line.startswith("OUTBOUND")]
    assert not outbound, f"the app reached outside the machine: {outbound}"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps", "--no-first-run", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list the page's requests
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def requested_hosts(driver) -> set[str]:
    """Hosts of every http(s) request the page made so far (data: and blob: URLs need no host)."""
    from urllib.parse import urlparse

    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlparse(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                hosts.add(url.hostname)
    return hosts


def full_page_screenshot(driver, width: int = 1280) -> bytes:
    """The whole page: the viewport is grown (exactly, through the DevTools protocol) until the page fits in it."""
    measure = "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"
    height = 0
    for _ in range(5):
        wanted = min(max(driver.execute_script(measure), 800), 4000)
        if wanted == height:
            break
        height = wanted
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        time.sleep(0.3)
    return driver.get_screenshot_as_png()


def assert_non_blank_png(data: bytes) -> None:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.width >= 800 and image.height >= 800
    grey = image.convert("L")
    low, high = grey.getextrema()
    assert high - low > 100, "the screenshot is a flat colour"
    colours = image.getcolors(maxcolors=4096)  # None when there are more
    assert colours is None or len(colours) > 50, "the screenshot has almost no colours"
    histogram = grey.histogram()
    assert max(histogram) < 0.97 * sum(histogram), "the screenshot is almost all one colour"


def click_when_ready(wait, css: str) -> None:
    """Click the first element matching `css` once the page has laid it out: Gradio inserts the examples' images
    before they are shown, and a click then fails with "element not interactable" (a race seen in CI)."""
    from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked(driver) -> bool:
        shown = [element for element in driver.find_elements(By.CSS_SELECTOR, css) if element.is_displayed()]
        if not shown:
            return False
        try:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", shown[0])
            shown[0].click()
        except (ElementNotInteractableException, StaleElementReferenceException):
            return False
        return True

    wait.until(clicked, message=f"nothing matching {css!r} could be clicked")


@needs_browser
def test_example_image_is_classified_in_the_browser(app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app_url, log_path = app
    wait = WebDriverWait(browser, 40)
    browser.get(app_url)
    # A Fashion-MNIST test image of a trouser (never seen in training), as the example gallery shows it.
    click_when_ready(wait, "#examples img[src*='trouser']")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img[src*='trouser']"))
    click_when_ready(wait, "#classify")
    top = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scores [data-testid='label-output-value']"))[0]
    shown = browser.find_elements(By.CSS_SELECTOR, "#scores meter")
    assert len(shown) == 5  # the top five of the ten default labels, with their confidences
    confidences = {m.get_attribute("aria-label"): float(m.get_attribute("value")) for m in shown}
    assert max(confidences, key=confidences.get) == top.text.strip() and sum(confidences.values()) <= 1.0 + 1e-6
    if TRAINED:
        assert top.text.strip() == "trouser" and confidences["trouser"] > 0.3

    screenshot = full_page_screenshot(browser)
    (tmp_path / "app.png").write_bytes(screenshot)
    assert_non_blank_png(screenshot)
    if os.environ.get("VLMIXER_APP_SCREENSHOT"):
        Path(os.environ["VLMIXER_APP_SCREENSHOT"]).write_bytes(screenshot)
    assert_offline(browser, log_path)


@needs_browser
def test_cutmix_picture_is_redrawn_for_a_typed_sentence(app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app_url, log_path = app
    wait = WebDriverWait(browser, 40)
    if browser.current_url != app_url:
        browser.get(app_url)
    before = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#picture img"))[0].get_attribute("src")
    sentence = browser.find_element(By.CSS_SELECTOR, "#sentence textarea, #sentence input")
    sentence.clear()
    sentence.send_keys("Blue jeans, a grey coat and a leather bag.")
    click_when_ready(wait, "#mix")
    picture = wait.until(
        lambda d: [i for i in d.find_elements(By.CSS_SELECTOR, "#picture img") if i.get_attribute("src") != before]
    )[0]
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", picture))
    assert browser.execute_script("return arguments[0].naturalWidth", picture) == 1000  # render_mixed_sentences' width
    assert_offline(browser, log_path)

"""The offline tokenizer of tiny MedRG models: a byte-level BPE trained here, without any download, on a
corpus that reads ordinary English: reports of every style of the project's varied report writer
(``processing/data/report_text.write_report``) over many seeds, the prompt and answer templates, and a
word list of ordinary English and clinical words (``ORDINARY_WORDS``).

Measured on the 1,532 narrative ChestX-ray8 reports (GPT/LLaMA writers): 1.31 tokens per word, so a
180-word report is about 237 tokens (the first, 800-token radiology-template tokenizer: 3.16 per word, ~570). ``<image>`` and ``<BOX>`` are single special
tokens. Training is deterministic and cached per process (``train_tiny_tokenizer`` returns a fresh copy).
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medrg.processing.prompting_medrg import (
    ANSWER_PREFIX,
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_FINDING_ANSWER,
    REPORT_PREFIX,
    answer_text,
)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
IMAGE_TOKEN = "<image>"
BOX_TOKEN = "<BOX>"
DEFAULT_VOCAB_SIZE = 4096
CORPUS_REPORTS = 1500  # varied-writer reports in the corpus
WORD_REPEATS = 4  # each ordinary word is seen this often (a word seen once is rarely merged whole)

# Ordinary English and clinical words a report by any writer may use (written for this corpus; lower case,
# the corpus adds capitalised forms).
ORDINARY_WORDS = """
a about above absence absent accompanying according accumulation acute additional adjacent advanced advised
after again against age air airspace airway airways alignment all also although alveolar an anatomic and
angle angles anterior aorta aortic apex apical appear appearance appears apply appropriate approximately
are area areas around arrhythmias artery as aspect aspiration assess assessed assessment associated at
atelectasis atelectatic available axial background bacterial band base based basal bases basilar be because
been before being benign between beyond bibasilar bilateral bilaterally biopsy blood blunting body bone
bones border borders both breath breathing bronchi bronchial bronchiectasis bronchograms but by calcification
calcified calcifications can cancer cannot cardiac cardiologist cardiomediastinal cardiomegaly
cardiomyopathy cardiopulmonary cardiothoracic care case cause caused causes causing cavitation cavity
central cephalization certain chamber chambers change changes characteristic characteristics characterize
characterized chest chronic circumscribed clear clearly clinical clinically clinician close collapse
collection common commonly comparison compatible complete completely complication complications compressive
concern concerning condition conditions confirm confirmed confluent congestion congestive consider
consideration considered consistent consolidation consolidative contour contours contrast correlate
correlation costophrenic cough could critical ct current currently cyst damage decreased definite
definitive degenerative degree demonstrate demonstrated demonstrates dense density depending described
despite detailed detected determine determined develop developed development device diagnosis diagnostic
diameter diaphragm diaphragmatic differential diffuse dilated dilation directly discoid discussed disease
disorders displaced distal distress do does due during dyspnea early echocardiogram echocardiography edema
effect effusion effusions either elevated elevation emphysema enlarged enlargement entire especially
essential evaluate evaluated evaluation evidence exact exam examination exceeds excess exclude expansion
exposure extending extension extent external failure features fever few fibrosis field fields film
filling finding findings first fissure fluid focal follow follow-up following for fracture free frequently
from frontal full function further general generalized given glass good granuloma ground guide hazy heart
help hemidiaphragm hemithorax hilar hilum history homogeneous homogenous however hyperinflation
hypertension hypertensive identified if ill-defined image images imaging immediate impaired implications
important impression in include includes including increase increased indicate indicated indicates
indicating indication indicative infection infectious infiltrate infiltrates infiltration inflammation
inflammatory inflames inner insertion interstitial interval into intervention involve involved involvement
involving irregular is it its known large larger lateral layering left left-sided length lesion lesions
level like likely limits line linear lines lingula lingular lobar lobe lobes lobulated localized located
location loss low lower lung lungs lymph magnetic main make malignancy malignant management margin margins
marked markings mass masses may measure measurement measurements measures measuring mediastinal mediastinum
medical medication mid middle mild minimal moderate monitor monitoring more most mostly multifocal multiple
musculoskeletal narrowing nature necessary need needed needle neoplasm neoplastic new nodular nodule nodules
non normal not noted noticeable observed obtained obscured occupying of often on one only opacification
opacified opacities opacity or other otherwise outside overall oxygen pa pain parenchyma parenchymal part
partial particularly patchy pathology patient patient's pattern perihilar peripheral persistent physician
placement plate-like pleura pleural pneumonia pneumothorax portable portion position positioned possible
possibly posterior potential potentially predominantly preliminary presence present previous primary prior
probable probably process progression prominence prominent prompt proper provide pulmonary pulmonologist
radiation radiograph radiographic radiologist range rather recent recommend recommendation recommendations
recommended reduced referred reflect region regions related relative remainder represent representing
required resolution resolved resonance respiratory response result reveal reveals review right
right-sided rounded ruled scan seen segment segmental sepsis serious severe severity shadow shape sharp
shift shortness should show shows side sign significant signs silhouette similar since single situated
size skeletal slight slightly small smooth soft solid some space specific specifically spiculated spine
stable standard status structure structures study subsegmental subtle such suggest suggested suggesting
suggestive suggests support surgery surgical surrounding suspected suspicion suspicious swelling symptomatic
symptoms target technique tension test testing tests than that the their them then therapeutic therapy
there therefore these they thickening this thoracentesis thoracic thorax those through thus tissue to
tomography top trachea treatment tube tumor type typical typically unchanged underlying unremarkable upper
upright urgent used usually valvular vascular ventricle ventricular view views visible visualized volume
wall was well well-defined were whether which while white widening with within without would x-ray years
zone zones
abnormal abnormality abnormalities accurate account acquired action active actively activity addition
address advanced affect affected air-filled alternatively amount analysis another any apparent appropriate
approach areas arise arising aspects assist attention avoid based becomes best better blockage borderline
bottom burden called carefully cells characterization chemotherapy circulation clarify classic combination
commonly compared comparing compression comprehensive concentric concerning conclusion confirmation
consultation contain continue continued contribute correlated crucial damage decision definitive
delineation detailed detect determination develop deviation differentiate difficult dimension dimensions
direct discomfort discussion distinguish documented draining drainage due duration easily effective
effectively ensure environment established estimated etiology evaluate eventually evident examine
examined example exchange existing expected experience experiencing explain exposure extensive extent
factors familiar family favor features filled fluffy focus form formation found frequently functional
generally gradual greater guidance healthcare help helpful high highly hospital identify illness
imaging immediately impact improve improvement increase independent individual infections initial
inflamed inhaled insight instance instead intensive interpretation investigation irregularity issue
issues itself keep larger lead leading least lesser levels lifestyle limited local long longer lower
maintain major majority manage managed manner mean means measured medicine method mild minor modality
moreover necessary negative neither nor notable note nothing number observation obstruction obvious
occur occurs often operation optimal option options order origin outcome outcomes over part particular
past patients perform performed perhaps period periodic persist plan planning point possibility
practitioner precise predominant prescribed presentation presents pressure prevent primarily principal
prior procedure procedures produce prognosis proper properly provided providing quality question quickly
radiology rate reason reasons receive recognized reduce reevaluation refer regarding regular related
relevant rely remain remains repeat report reported require requires resolve responsible result results
risk role routine scheduled screening secondary section see seek sequence series service setting several
short shortly signal simple simply situation smoking sometimes source special specialist specified stage
start state step steps still strongly subsequent sufficient suggestion suitable supportive sure
suspicion system systemic take taken therapy third three timely times total treat treated two
ultimately unclear understand unknown until untreated usual value various verify very visualization
warrant warranted way weeks whole widespread will worsening
"""


def _word_lines() -> list[str]:
    words = sorted(set(ORDINARY_WORDS.split()))
    lines = []
    for repeat in range(WORD_REPEATS):
        shuffled = words[repeat::WORD_REPEATS] + words
        lines.append(" ".join(shuffled))
        lines.append(" ".join(w.capitalize() for w in shuffled[:: repeat + 2]))
    return lines


def radiology_corpus(num_reports: int = CORPUS_REPORTS) -> list[str]:
    """The deterministic training corpus: prompt/answer templates, ``num_reports`` varied reports with their
    answers, and the ordinary word list."""
    from medrg.processing.data.report_text import Finding, write_report
    from medrg.processing.vocabulary_medrg import CATEGORY_TERMS

    lines = [REPORT_PREFIX.format(instruction=DEFAULT_INSTRUCTION) + ANSWER_PREFIX, DEFAULT_NO_FINDING_ANSWER]
    categories = sorted(CATEGORY_TERMS)
    for seed in range(num_reports):
        rng = random.Random(seed)
        findings = []
        for category in rng.sample(categories, rng.choice([0, 1, 1, 2, 3])):
            if CATEGORY_TERMS[category].central:
                findings.append(Finding(category, severity=rng.choice(["", "mild"])))
            else:
                side = rng.choice(["right", "left", "left", "right", "bilateral"])
                zone = rng.choice(["upper", "middle", "lower", ""])
                findings.append(
                    Finding(category, side, zone, rng.choice(["", "", "small", "moderate", "large"]))
                )
        written = write_report(findings, rng)
        lines.append(
            written.text + ANSWER_PREFIX + answer_text(written.phrases, BOX_TOKEN, DEFAULT_NO_FINDING_ANSWER)
        )
    lines.extend(_word_lines())
    for left, right in itertools.product(("right", "left"), ("upper", "middle", "lower")):
        lines.append(f"{left} {right} lobe {left} {right} zone {left}-sided {left} lung")
    return lines


@lru_cache(maxsize=4)
def _trained_json(vocab_size: int) -> str:
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(radiology_corpus(), trainer=trainer)
    return tokenizer.to_str()


def train_tiny_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (``vocab_size`` tokens before the two grounding tokens) on
    ``radiology_corpus()`` and add ``<image>`` and ``<BOX>`` as special tokens. The trained model is cached
    per process; every call returns an independent tokenizer object."""
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + special tokens + merges), got {vocab_size}")
    tokenizer = Tokenizer.from_str(_trained_json(int(vocab_size)))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    add_grounding_tokens(wrapped)
    return wrapped


def add_grounding_tokens(tokenizer) -> None:
    """Add `<image>` and `<BOX>` as special tokens (keeping existing extra special tokens)."""
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IMAGE_TOKEN, BOX_TOKEN]}, replace_extra_special_tokens=False
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

"""Which ANS disposition a received package gets: processed, or the 90x code of its first inconsistency."""

from __future__ import annotations

from gateway.receipts.answer import package_disposition
from mappers import xdm
from mappers.mdn import Disposition
from mappers.patient import Patient
from tests.unit.mappers import samples


def disposition(metadata_patient: Patient, cda_patient: Patient) -> Disposition:
    document = samples.cda_document(cda_patient, confidentiality=())
    package = xdm.build_package(metadata_patient, [document], now=samples.NOW)
    return package_disposition(package)


def test_a_consistent_package_is_processed() -> None:
    assert disposition(samples.patient(), samples.patient()) == Disposition()


def test_another_matricule_or_other_traits_in_the_cda_give_904() -> None:
    other = samples.patient(matricule="146026322000196")
    assert disposition(samples.patient(), other).error_code == 904
    renamed = samples.patient(given_name="CLAUDE")
    assert disposition(samples.patient(), renamed).error_code == 904


def test_an_ins_without_its_four_traits_gives_905() -> None:
    incomplete = samples.patient(birth_date=None)
    assert disposition(incomplete, incomplete).error_code == 905


def test_no_package_gives_903_and_an_unreadable_one_906() -> None:
    assert package_disposition(None).error_code == 903
    assert package_disposition(b"not a zip").error_code == 906

"""What a growing metadata cluster's record says: the size it began from, whatever failed since."""

from __future__ import annotations

from pitrix.runtime.metadata_grow import FAILED, growing
from pitrix.runtime.records import MetadataCluster, MetadataMember


def test_the_growth_says_where_it_began_and_drops_an_old_failure() -> None:
    one = MetadataCluster(owner="o", runtime="r", name="pitrix-meta-o-r")
    assert growing(one, 3) == "metadata cluster growing 1 → 3"
    # m1 joined: still "1 → 3", the text kept on the record.
    two = one.model_copy(
        update={"members": [MetadataMember(name="pitrix-meta-o-r-m1")], "condition": growing(one, 3)}
    )
    assert growing(two, 3) == "metadata cluster growing 1 → 3"
    failed = two.model_copy(update={"condition": growing(two, 3) + FAILED + "step run-instance: quota"})
    assert growing(failed, 3) == "metadata cluster growing 1 → 3"
    # Something else on the record (a replacement's words) is not a growth's.
    other = two.model_copy(update={"condition": "replacing member x: gone"})
    assert growing(other, 5) == "metadata cluster growing 2 → 5"

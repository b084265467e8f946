"""``python -m models.store init``: make the configured store ready to serve, once.

Compose's models-init job runs it before any worker starts. For an S3 store it creates
the bucket when the server has none of that name (a fresh MinIO); for any store it
seeds an empty one with the shipped default model. Then it prints the current version.
Exit 2, with one line on stderr, when the store cannot be reached or used.
"""

from __future__ import annotations

import sys

from digits.settings import load_or_exit
from models.store import StoreError, open_store, store_location


def create_bucket(location: str, settings) -> None:
    import botocore.exceptions

    from models.store.s3 import make_client, split_url

    bucket, _ = split_url(location)
    client = make_client(settings.AWS_ENDPOINT_URL, settings.AWS_ACCESS_KEY_ID,
                         settings.AWS_SECRET_ACCESS_KEY, settings.AWS_REGION)
    try:
        client.head_bucket(Bucket=bucket)
        return
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise StoreError(f"bucket {bucket}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise StoreError(f"model store {location} is unreachable: {exc}") from exc
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass  # another init got there first
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise StoreError(f"cannot create bucket {bucket}: {exc}") from exc
    print(f"model store: created bucket {bucket}", flush=True)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["init"]:
        print("usage: python -m models.store init", file=sys.stderr)
        return 2
    settings = load_or_exit()
    location = store_location(settings)
    try:
        if location.startswith("s3://"):
            create_bucket(location, settings)
        store = open_store(location, settings=settings)
        print(f"model store: current version {store.current()}", flush=True)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

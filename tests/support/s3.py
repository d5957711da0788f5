"""Small S3 client for tests/object_store.rs, run against the local moto server.

Usage: s3.py ENDPOINT COMMAND ARGS...
  mb BUCKET                      create a bucket
  put-dir DIR BUCKET PREFIX      upload every file below DIR under PREFIX/
  put FILE BUCKET KEY            upload one file
  get BUCKET KEY DEST            download an object (exit 3 if there is none)
  keys BUCKET PREFIX             print the keys below PREFIX, one a line
  uploads BUCKET                 print the number of multipart uploads not completed or aborted
"""

import os
import sys

import boto3
import botocore


def main():
    endpoint, command, *args = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "mb":
        s3.create_bucket(Bucket=args[0])
    elif command == "put-dir":
        root, bucket, prefix = args
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                s3.upload_file(path, bucket, f"{prefix}/{rel}")
    elif command == "put":
        path, bucket, key = args
        s3.upload_file(path, bucket, key)
    elif command == "get":
        bucket, key, dest = args
        try:
            s3.download_file(bucket, key, dest)
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey"):
                sys.exit(3)
            raise
    elif command == "keys":
        bucket, prefix = args
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for o in page.get("Contents", []):
                print(o["Key"])
    elif command == "uploads":
        print(len(s3.list_multipart_uploads(Bucket=args[0]).get("Uploads", [])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()

"""A real moto server in its own process on 127.0.0.1, with IAM authentication switched on.

A process of its own, because moto reads its switches (AMI validation, authentication) from the
environment at import and keeps its state in module globals: the test process stays clean. The
first three actions are unauthenticated, to create the IAM user whose key every test then signs with;
after that moto checks signatures, so a wrong secret is refused as AWS would refuse it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import aioboto3

LAUNCHER = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin
server.stop()
"""
REGION = "us-east-1"
BOOTSTRAP_ACTIONS = 3  # create_user, create_access_key, put_user_policy
ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


@dataclass
class MotoServer:
    process: asyncio.subprocess.Process
    endpoint: str
    access_key_id: str = ""
    secret_access_key: str = ""

    def runtime(self, **extra: Any) -> dict[str, Any]:
        return {
            "provider": "aws",
            "region": REGION,
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            **extra,
        }

    def session(self) -> aioboto3.Session:
        return aioboto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=REGION,
        )

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_moto() -> MotoServer:
    env = {
        **os.environ,
        "MOTO_ENABLE_AMI_VALIDATION": "true",
        "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
        "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_ACTIONS),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCHER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line.strip().isdigit():
        process.kill()
        await process.wait()
        raise RuntimeError(f"moto server did not start: {line!r}")
    server = MotoServer(process, f"http://127.0.0.1:{int(line)}")
    bootstrap = aioboto3.Session(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    async with bootstrap.client("iam", endpoint_url=server.endpoint, region_name=REGION) as iam:
        await iam.create_user(UserName="pitrix")
        key = (await iam.create_access_key(UserName="pitrix"))["AccessKey"]
        await iam.put_user_policy(UserName="pitrix", PolicyName="all", PolicyDocument=ALLOW_ALL)
    server.access_key_id = key["AccessKeyId"]
    server.secret_access_key = key["SecretAccessKey"]
    return server

/** Service discovery: which instances serve, on which host and named ports (pure, table-driven). */
import { describe, expect, it } from 'vitest';
import {
  type EndpointNode,
  type EndpointWorkload,
  jobEndpoints,
  namedPorts,
} from '../../scheduler/core/endpoints.js';

const w = (over: Partial<EndpointWorkload>): EndpointWorkload => ({
  id: 'w0',
  instance: 0,
  status: 'running',
  health: null,
  node_id: 'n1',
  ports: { http: 8080 },
  ...over,
});
const nodes = new Map<string, EndpointNode>([
  ['n1', { name: 'node-1', attributes: {} }],
  ['n2', { name: 'node-2', attributes: { host: '10.0.0.2' } }],
]);

describe('namedPorts', () => {
  it.each([
    ['no announcer', undefined, { http: 1 }],
    [
      'alias of the primary port',
      { primary_port: 'http', portmap: { aurora: '{{primary_port}}' } },
      { http: 1, aurora: 1 },
    ],
    [
      'alias of another port',
      { primary_port: 'http', portmap: { health: 'admin' } },
      { http: 1, admin: 2, health: 2 },
    ],
    ['static port', { primary_port: 'http', portmap: { https: '443' } }, { http: 1, https: 443 }],
    ['alias of nothing is left out', { primary_port: 'http', portmap: { x: 'nope' } }, { http: 1 }],
  ])('%s', (_, announce, expected) => {
    const allocated: Record<string, number> = 'admin' in expected ? { http: 1, admin: 2 } : { http: 1 };
    expect(namedPorts({ announce }, allocated)).toEqual(expected);
  });
});

describe('jobEndpoints', () => {
  const announce = { primary_port: 'http', portmap: { aurora: '{{primary_port}}' } };

  it('lists running instances in instance order with host and ports; others are left out', () => {
    const got = jobEndpoints(
      { announce },
      [
        w({ id: 'b', instance: 1, node_id: 'n2', ports: { http: 9000 } }),
        w({ id: 'a', instance: 0 }),
        w({ id: 'c', instance: 2, status: 'starting' }),
        w({ id: 'd', instance: 3, node_id: null }),
        w({ id: 'e', instance: 4, node_id: 'gone' }),
      ],
      nodes,
    );
    expect(got).toEqual([
      {
        instance: 0,
        workload_id: 'a',
        node: 'node-1',
        host: 'node-1',
        primary_port: 8080,
        ports: { http: 8080, aurora: 8080 },
      },
      {
        instance: 1,
        workload_id: 'b',
        node: 'node-2',
        host: '10.0.0.2',
        primary_port: 9000,
        ports: { http: 9000, aurora: 9000 },
      },
    ]);
  });

  it('with a health check only healthy instances serve', () => {
    const got = jobEndpoints(
      { announce, health_check_config: {} as never },
      [
        w({ id: 'a', health: 'healthy' }),
        w({ id: 'b', instance: 1, health: 'unknown' }),
        w({ id: 'c', instance: 2, health: 'unhealthy' }),
      ],
      nodes,
    );
    expect(got.map((e) => e.workload_id)).toEqual(['a']);
  });

  it('without an announcer there is no primary port', () => {
    expect(jobEndpoints({}, [w({})], nodes)[0]).toMatchObject({ primary_port: null, ports: { http: 8080 } });
  });
});

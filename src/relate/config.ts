import { z } from 'zod';

/** `policy.careRelationships`: where care relationships come from and how long they are trusted. */
export const careRelationshipsSchema = z
  .object({
    careTeam: z
      .object({
        enabled: z.boolean().default(true),
        statuses: z.array(z.enum(['proposed', 'active', 'suspended', 'inactive', 'entered-in-error'])).min(1).default(['active']),
        organizationMembership: z
          .boolean()
          .default(false)
          .describe('A CareTeam whose participant is the user’s service (Organization) counts (service-level teams).'),
        nestedDepth: z.number().int().min(0).max(5).default(2).describe('How many levels of CareTeam-in-CareTeam count.'),
      })
      .strict()
      .default({ enabled: true, statuses: ['active'], organizationMembership: false, nestedDepth: 2 }),
    encounter: z
      .object({
        enabled: z.boolean().default(true),
        statuses: z
          .array(z.enum(['planned', 'arrived', 'triaged', 'in-progress', 'onleave', 'finished', 'cancelled', 'entered-in-error', 'unknown']))
          .min(1)
          .default(['arrived', 'triaged', 'in-progress', 'onleave']),
        finishedWithinDays: z
          .number()
          .int()
          .min(0)
          .max(365)
          .default(30)
          .describe('A finished Encounter counts for this many days after its end (0: never).'),
      })
      .strict()
      .default({ enabled: true, statuses: ['arrived', 'triaged', 'in-progress', 'onleave'], finishedWithinDays: 30 }),
    cache: z
      .object({
        ttlSeconds: z.number().int().min(0).max(3600).default(60),
        maxEntries: z.number().int().min(1).default(10_000),
        maxPatients: z
          .number()
          .int()
          .min(1)
          .default(1_000_000)
          .describe(
            'Bound on the patients held across all cached care sets (about 0.3 KB each with their evidence): what bounds the memory whatever the sets’ sizes. The least recently used sets go first.',
          ),
      })
      .strict()
      .default({ ttlSeconds: 60, maxEntries: 10_000, maxPatients: 1_000_000 }),
    maxPages: z.number().int().min(1).max(1000).default(20).describe('Pages followed per lookup before refusing.'),
  })
  .strict();

export type CareRelationshipsConfig = z.infer<typeof careRelationshipsSchema>;

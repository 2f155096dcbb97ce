<?php
// This file is part of the ACME theme for Moodle - https://moodle.org/

/**
 * Strings of theme_acme.
 *
 * @package    theme_acme
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'ACME';
$string['choosereadme'] = 'The ACME theme: Boost in ACME colours.';
$string['configtitle'] = 'ACME';
$string['privacy:metadata'] = 'The ACME theme stores no personal data.';

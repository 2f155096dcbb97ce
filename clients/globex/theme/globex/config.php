<?php
// This file is part of the Globex theme for Moodle - https://moodle.org/
// A Boost child theme: Boost's layouts, templates and renderers, Globex's colours.
defined('MOODLE_INTERNAL') || die();

$THEME->name = 'globex';
$THEME->parents = ['boost'];
$THEME->sheets = [];
$THEME->editor_sheets = [];
$THEME->editor_scss = ['editor'];
$THEME->usefallback = true;
$THEME->scss = function($theme) {
    return theme_globex_get_main_scss_content($theme);
};
$THEME->prescsscallback = 'theme_globex_get_pre_scss';
$THEME->yuicssmodules = [];
// Boost's renderers (core_renderer::firstview_fakeblocks and the rest).
$THEME->rendererfactory = 'theme_overridden_renderer_factory';
$THEME->requiredblocks = '';
$THEME->addblockposition = BLOCK_ADDBLOCK_POSITION_FLATNAV;
$THEME->haseditswitch = true;
$THEME->usescourseindex = true;
$THEME->activityheaderconfig = ['notitle' => true];
